-- `sqs2pg status` reads the newest rows: the last commit (max(ingested_at)), the rows of the
-- last minute, hour and day, and the lag of the last hour's. Without this index each is a
-- scan of the whole table. Rows arrive nearly in ingested_at order, so the index grows at its
-- right edge: about one cheap append per row on the write path.
--
-- Built without CONCURRENTLY (a migration runs in a transaction), so on a large table it
-- blocks inserts while it builds. There, build it beforehand, outside a transaction, with
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS user_logins_ingested_at_idx ON user_logins (ingested_at);
-- and this migration then finds it and does nothing.
CREATE INDEX IF NOT EXISTS user_logins_ingested_at_idx ON user_logins (ingested_at);
