-- PostgreSQL keeps every identifier of the last 24 hours in the identifier log, looked up by
-- index: several meterd processes share the database, so dedup cannot live in one process's
-- memory (SQLite's store indexes counted events in memory and logs only uncounted ones).
-- @only postgresql
CREATE INDEX event_identifier_log_by_identifier
  ON event_identifier_log (account_id, livemode, identifier);

CREATE INDEX event_identifier_log_by_age ON event_identifier_log (received);
-- @end
