-- PostgreSQL keeps every identifier of the last 24 hours in the identifier log, looked up by
-- index: several meterd processes share the database, so dedup cannot live in one process's
-- memory (SQLite's store indexes counted events in memory and logs only uncounted ones). The
-- log is pruned in arrival order, by sequence, so it needs no index on its age.
-- Rollup rows are updated in place batch after batch: pages kept 30% free let PostgreSQL
-- update them without new index entries (HOT updates).
-- @only postgresql
CREATE INDEX event_identifier_log_by_identifier
  ON event_identifier_log (account_id, livemode, identifier);

ALTER TABLE meter_rollups SET (fillfactor = 70);
-- @end
