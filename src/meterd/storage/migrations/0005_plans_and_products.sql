-- Products and plans (the legacy v1 Plans API). Ids are unique per account and mode, since a
-- custom plan id may be used in both live and test mode. Amounts are decimal strings in the
-- currency's minor unit; tiers and metadata are JSON.
CREATE TABLE products (
  seq @SERIAL_PK@,
  id TEXT NOT NULL,
  account_id TEXT NOT NULL REFERENCES accounts (id),
  livemode BOOLEAN NOT NULL,
  name TEXT NOT NULL,
  active BOOLEAN NOT NULL,
  description TEXT,
  metadata TEXT NOT NULL,
  statement_descriptor TEXT,
  unit_label TEXT,
  tax_code TEXT,
  created BIGINT NOT NULL,
  updated BIGINT NOT NULL,
  UNIQUE (account_id, livemode, id)
);

CREATE INDEX products_by_scope ON products (account_id, livemode, seq);

CREATE TABLE plans (
  seq @SERIAL_PK@,
  id TEXT NOT NULL,
  account_id TEXT NOT NULL REFERENCES accounts (id),
  livemode BOOLEAN NOT NULL,
  active BOOLEAN NOT NULL,
  amount TEXT,
  billing_scheme TEXT NOT NULL,
  currency TEXT NOT NULL,
  billing_interval TEXT NOT NULL,
  interval_count INTEGER NOT NULL,
  metadata TEXT NOT NULL,
  meter_id TEXT REFERENCES meters (id),
  nickname TEXT,
  product_id TEXT NOT NULL,
  tiers TEXT,
  tiers_mode TEXT,
  transform_usage TEXT,
  trial_period_days INTEGER,
  usage_type TEXT NOT NULL,
  created BIGINT NOT NULL,
  UNIQUE (account_id, livemode, id),
  FOREIGN KEY (account_id, livemode, product_id) REFERENCES products (account_id, livemode, id)
);

CREATE INDEX plans_by_scope ON plans (account_id, livemode, seq);

CREATE INDEX plans_by_product ON plans (account_id, livemode, product_id, seq);
