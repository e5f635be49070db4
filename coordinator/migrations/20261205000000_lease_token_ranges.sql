-- Lease tokens already promised: every start reserves a fresh range above this with a fully
-- synchronous commit before it issues any, so a power loss that drops the last (NORMAL,
-- unsynced) commits can never make a restarted coordinator issue a token again.
CREATE TABLE IF NOT EXISTS lease_token_ranges (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    reserved_below INTEGER NOT NULL
);
