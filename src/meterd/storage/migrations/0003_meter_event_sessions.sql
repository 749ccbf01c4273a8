-- Meter event sessions: short-lived tokens for the v2 stream, bound to one account and mode.
-- Only a hash of each token is kept.
CREATE TABLE meter_event_sessions (
  id TEXT PRIMARY KEY,
  account_id TEXT NOT NULL REFERENCES accounts (id),
  livemode BOOLEAN NOT NULL,
  token_hash TEXT NOT NULL UNIQUE,
  created BIGINT NOT NULL,
  expires_at BIGINT NOT NULL
);

CREATE INDEX meter_event_sessions_by_expiry ON meter_event_sessions (expires_at);
