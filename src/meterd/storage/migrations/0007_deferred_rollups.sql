-- SQLite appends a batch's raw events and records their range here, in the same transaction;
-- the ranges are folded into their minute, hour and day rollups about every 0.1 s, before any
-- read of rollups, and before any change to them other than a fold (see
-- meterd.storage.sqlite_events.DeferredRollups). A range is recorded in the transaction that
-- appends its events, so a crash loses none. ``total`` is an upper bound of the range's scaled
-- values: ranges folded together must sum in 64 bits. PostgreSQL updates rollups with each
-- batch and has no such table.
-- @only sqlite
CREATE TABLE deferred_rollups (
  first_seq INTEGER NOT NULL,
  end_seq INTEGER NOT NULL,
  total INTEGER NOT NULL
);
-- @end
