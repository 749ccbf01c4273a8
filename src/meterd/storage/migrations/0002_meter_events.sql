-- Meter events (raw, append-only), the 24-hour identifier dedup set, per-minute and per-hour
-- rollups, and error reports.

-- Raw events: the source of truth. `bucket` is the rollup leaf the event belongs to (its minute,
-- or its hour/day for meters with an event_time_window); `value` is the canonical decimal text.
CREATE TABLE meter_events (
  seq @SERIAL_PK@,
  meter_seq BIGINT NOT NULL,
  customer TEXT NOT NULL,
  ts BIGINT NOT NULL,
  bucket BIGINT NOT NULL,
  value TEXT,
  identifier TEXT NOT NULL,
  created BIGINT NOT NULL,
  cancelled BOOLEAN NOT NULL DEFAULT FALSE
);

-- Time first, so that inserts land in the few pages of the current bucket.
CREATE INDEX meter_events_by_bucket ON meter_events (bucket, meter_seq, customer);

-- Identifiers seen in the last 24 hours (pruned as they age): dedup and cancellation.
-- A counted event points at its raw row; one that only raised an error report keeps its name.
CREATE TABLE event_identifiers (
  account_id TEXT NOT NULL,
  livemode BOOLEAN NOT NULL,
  identifier TEXT NOT NULL,
  received BIGINT NOT NULL,
  event_seq BIGINT,
  uncounted_event_name TEXT,
  PRIMARY KEY (account_id, livemode, identifier)
) @WITHOUT_ROWID@;

CREATE INDEX event_identifiers_by_age ON event_identifiers (received);

-- Rollups per (meter, customer, size, bucket). Meters without an event_time_window keep sizes
-- 60, 3600 and 86400 (count, exact scaled sum, latest event); windowed meters keep one row per
-- window holding the event that counts there. Scaled values are integers, or decimal text when
-- they outgrow 64 bits (@SCALED@ leaves SQLite's column untyped so integers stay integers).
CREATE TABLE meter_rollups (
  meter_seq BIGINT NOT NULL,
  customer TEXT NOT NULL,
  size INTEGER NOT NULL,
  bucket BIGINT NOT NULL,
  event_count BIGINT NOT NULL,
  total @SCALED@ NOT NULL,
  latest_ts BIGINT NOT NULL,
  latest_seq BIGINT NOT NULL,
  latest_value @SCALED@ NOT NULL,
  PRIMARY KEY (meter_seq, customer, size, bucket)
) @WITHOUT_ROWID@;

-- Error reports: v2 thin events, one per (scope, type, event name, one-minute window).
CREATE TABLE error_reports (
  seq @SERIAL_PK@,
  id TEXT NOT NULL UNIQUE,
  account_id TEXT NOT NULL,
  livemode BOOLEAN NOT NULL,
  type TEXT NOT NULL,
  event_name TEXT NOT NULL,
  meter_id TEXT,
  window_start BIGINT NOT NULL,
  created BIGINT NOT NULL,
  data TEXT NOT NULL,
  UNIQUE (account_id, livemode, type, event_name, window_start)
);

CREATE INDEX error_reports_by_scope ON error_reports (account_id, livemode, seq);
