-- Ingest whose cost does not grow with the volume stored (the stream issue).
--
-- 1. Raw events keep their value as a scaled integer (text past 62 bits), as rollups do, so a
--    batch's rollups are summed in SQL. They lose the (bucket, meter, customer) index that every
--    insert paid for: only meters whose rollups keep the latest event (formula `last`, or an
--    event_time_window) need a bucket's raw events again, to recount it after a cancellation,
--    and only their events carry `recount_bucket` and enter the partial index. Cancelling an
--    event of a count or sum meter subtracts it from its rollups instead.
-- 2. Identifiers move to an append-only log (no index over random identifiers); the store looks
--    them up through an in-memory index rebuilt from the log at start-up.
-- 3. Rollups of count and sum meters stop tracking the latest event (nothing reads it).
-- 4. Rollups are keyed time first (meter, size, bucket, customer), so that a batch of current
--    events updates the few pages of the current minute, hour and day instead of one page per
--    customer; reads by customer go through a second index, which only grows when a row is new.
-- The scaled conversion below is SQLite's spelling; the PostgreSQL backend starts from this
-- schema and has no data to convert. There, raw events are partitioned by arrival month (the
-- store creates each month's partition ahead of time), so that old months can be dropped
-- without touching live data; their sequence numbers come from a sequence.

-- @only sqlite
CREATE TABLE meter_events_scaled (
  seq @SERIAL_PK@,
  meter_seq BIGINT NOT NULL,
  customer TEXT NOT NULL,
  ts BIGINT NOT NULL,
  value @SCALED@,
  identifier TEXT NOT NULL,
  created BIGINT NOT NULL,
  cancelled BOOLEAN NOT NULL DEFAULT FALSE,
  recount_bucket BIGINT
);

INSERT INTO meter_events_scaled
  (seq, meter_seq, customer, ts, value, identifier, created, cancelled, recount_bucket)
SELECT
  e.seq, e.meter_seq, e.customer, e.ts,
  CASE
    WHEN e.value IS NULL THEN NULL
    WHEN instr(e.value, '.') = 0 AND length(e.value) <= 6
      THEN CAST(e.value AS BIGINT) * 1000000000000
    WHEN instr(e.value, '.') = 0 THEN e.value || '000000000000'
    WHEN instr(e.value, '.') <= 7
      THEN CAST(substr(e.value, 1, instr(e.value, '.') - 1) AS BIGINT) * 1000000000000
        + CAST(substr(substr(e.value, instr(e.value, '.') + 1) || '000000000000', 1, 12) AS BIGINT)
    ELSE substr(e.value, 1, instr(e.value, '.') - 1)
      || substr(substr(e.value, instr(e.value, '.') + 1) || '000000000000', 1, 12)
  END,
  e.identifier, e.created, e.cancelled,
  CASE WHEN m.formula = 'last' OR m.event_time_window IS NOT NULL THEN e.bucket END
FROM meter_events e JOIN meters m ON m.seq = e.meter_seq
ORDER BY e.seq;
-- @end

-- @only postgresql
CREATE SEQUENCE meter_events_seq;

CREATE TABLE meter_events_scaled (
  seq BIGINT NOT NULL DEFAULT nextval('meter_events_seq'),
  meter_seq BIGINT NOT NULL,
  customer TEXT NOT NULL,
  ts BIGINT NOT NULL,
  value NUMERIC,
  identifier TEXT NOT NULL,
  created BIGINT NOT NULL,
  cancelled BOOLEAN NOT NULL DEFAULT FALSE,
  recount_bucket BIGINT,
  PRIMARY KEY (seq, created)
) PARTITION BY RANGE (created);

CREATE TABLE meter_events_default PARTITION OF meter_events_scaled DEFAULT;
-- @end

DROP TABLE meter_events;
ALTER TABLE meter_events_scaled RENAME TO meter_events;

CREATE INDEX meter_events_for_recount ON meter_events (meter_seq, customer, recount_bucket)
  WHERE recount_bucket IS NOT NULL;

CREATE TABLE event_identifier_log (
  seq @SERIAL_PK@,
  account_id TEXT NOT NULL,
  livemode BOOLEAN NOT NULL,
  identifier TEXT NOT NULL,
  received BIGINT NOT NULL,
  event_seq BIGINT,
  uncounted_event_name TEXT
);

INSERT INTO event_identifier_log
  (account_id, livemode, identifier, received, event_seq, uncounted_event_name)
SELECT account_id, livemode, identifier, received, event_seq, uncounted_event_name
FROM event_identifiers ORDER BY received;

DROP TABLE event_identifiers;

CREATE TABLE meter_rollups_by_time (
  meter_seq BIGINT NOT NULL,
  customer TEXT NOT NULL,
  size INTEGER NOT NULL,
  bucket BIGINT NOT NULL,
  event_count BIGINT NOT NULL,
  total @SCALED@ NOT NULL,
  latest_ts BIGINT NOT NULL,
  latest_seq BIGINT NOT NULL,
  latest_value @SCALED@ NOT NULL,
  PRIMARY KEY (meter_seq, size, bucket, customer)
) @WITHOUT_ROWID@;

INSERT INTO meter_rollups_by_time
SELECT r.meter_seq, r.customer, r.size, r.bucket, r.event_count, r.total,
  CASE WHEN m.formula <> 'last' AND m.event_time_window IS NULL THEN 0 ELSE r.latest_ts END,
  CASE WHEN m.formula <> 'last' AND m.event_time_window IS NULL THEN 0 ELSE r.latest_seq END,
  CASE WHEN m.formula <> 'last' AND m.event_time_window IS NULL THEN 0 ELSE r.latest_value END
FROM meter_rollups r JOIN meters m ON m.seq = r.meter_seq;

DROP TABLE meter_rollups;
ALTER TABLE meter_rollups_by_time RENAME TO meter_rollups;

CREATE INDEX meter_rollups_by_customer ON meter_rollups (meter_seq, customer, size, bucket);
