-- SQLite brings a batch's minute rollups up to date in the batch's own transaction and defers
-- its hour and day rows: each batch records its range of raw events here, and the ranges are
-- folded into hour and day rows about once a second, before any read of rollups, and before
-- any change to them other than a batch's own (see meterd.storage.sqlite_events). A range is
-- recorded in the transaction that appends its events, so a crash loses none. ``total`` is an
-- upper bound of the range's scaled values: ranges folded together must sum in 64 bits.
-- PostgreSQL updates all three rows with each batch and has no such table.
-- @only sqlite
CREATE TABLE deferred_rollups (
  first_seq INTEGER NOT NULL,
  end_seq INTEGER NOT NULL,
  total INTEGER NOT NULL
);
-- @end
