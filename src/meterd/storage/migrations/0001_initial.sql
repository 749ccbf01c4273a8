-- Accounts, API keys, meters and idempotency records.
-- @SERIAL_PK@ and @BLOB@ are filled in per database by meterd.storage.migrations.
CREATE TABLE accounts (
  id TEXT PRIMARY KEY,
  created BIGINT NOT NULL
);

CREATE TABLE api_keys (
  id TEXT PRIMARY KEY,
  account_id TEXT NOT NULL REFERENCES accounts (id),
  livemode BOOLEAN NOT NULL,
  secret_hash TEXT NOT NULL UNIQUE,
  last4 TEXT NOT NULL,
  created BIGINT NOT NULL,
  revoked_at BIGINT
);

CREATE TABLE meters (
  seq @SERIAL_PK@,
  id TEXT NOT NULL UNIQUE,
  account_id TEXT NOT NULL REFERENCES accounts (id),
  livemode BOOLEAN NOT NULL,
  display_name TEXT NOT NULL,
  event_name TEXT NOT NULL,
  formula TEXT NOT NULL,
  customer_key TEXT NOT NULL,
  value_key TEXT NOT NULL,
  event_time_window TEXT,
  status TEXT NOT NULL,
  deactivated_at BIGINT,
  created BIGINT NOT NULL,
  updated BIGINT NOT NULL,
  UNIQUE (account_id, livemode, event_name)
);

CREATE INDEX meters_by_scope ON meters (account_id, livemode, seq);

CREATE TABLE idempotency_keys (
  account_id TEXT NOT NULL,
  livemode BOOLEAN NOT NULL,
  key TEXT NOT NULL,
  fingerprint TEXT NOT NULL,
  created BIGINT NOT NULL,
  status INTEGER,
  body @BLOB@,
  PRIMARY KEY (account_id, livemode, key)
);

CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created);
