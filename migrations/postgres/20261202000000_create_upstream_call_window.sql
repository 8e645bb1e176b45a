-- The upstream-call window every replica shares (src/coordination/window.rs): when several
-- gateways share this database, they share Cryptlex's rate limit through it. PostgreSQL only;
-- a SQLite ledger serves one replica, whose budget is its own.

-- One row. Its row lock serialises every replica's starters, and it holds the start times of
-- the calls in the current window, so it never holds more than the largest limit asked for.
CREATE TABLE upstream_call_window (
    only_row BOOLEAN       PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    -- Start times by the database's clock (the only clock every replica shares), oldest first.
    starts   TIMESTAMPTZ[] NOT NULL DEFAULT '{}'
);
INSERT INTO upstream_call_window DEFAULT VALUES;

-- Records one call start if fewer than `call_limit` calls started in the last `window_length`;
-- otherwise says how long until one may. One round trip, and the lock is held only while this
-- runs on the server (never across a network round trip to a replica).
--
-- `started_at_us` is the recorded start (unix microseconds, NULL when refused); `retry_after_us`
-- is 0 when started, else how long (in microseconds) until enough starts leave the window for
-- one more to fit.
CREATE FUNCTION upstream_call_window_try_start(
    call_limit    INTEGER,
    window_length INTERVAL,
    lock_wait_ms  INTEGER
) RETURNS TABLE (started BOOLEAN, started_at_us BIGINT, retry_after_us BIGINT)
LANGUAGE plpgsql AS $$
DECLARE
    live     TIMESTAMPTZ[];
    previous INTEGER;
    moment       TIMESTAMPTZ;
BEGIN
    -- A replica that cannot get the lock in time falls back to its static share; it must not
    -- queue here after its caller has given up. Local: ends with this statement's transaction.
    PERFORM set_config('lock_timeout', lock_wait_ms::text, true);
    -- The window is transient: should the server crash, losing its last few starts costs at
    -- most one window's overshoot, while waiting for the WAL flush on every upstream call
    -- (the row lock alone makes this transaction write) costs milliseconds each.
    PERFORM set_config('synchronous_commit', 'off', true);
    PERFORM 1 FROM upstream_call_window WHERE only_row FOR UPDATE;
    IF NOT FOUND THEN
        -- Someone deleted the row: start again with an empty window.
        INSERT INTO upstream_call_window DEFAULT VALUES ON CONFLICT DO NOTHING;
        PERFORM 1 FROM upstream_call_window WHERE only_row FOR UPDATE;
    END IF;
    -- Read after the lock: now() is the transaction's start, which may be before the wait.
    moment := clock_timestamp();
    SELECT cardinality(w.starts),
           coalesce((SELECT array_agg(s ORDER BY s) FROM unnest(w.starts) AS s
                      WHERE s > moment - window_length), '{}')
      INTO previous, live
      FROM upstream_call_window AS w
     WHERE w.only_row;
    IF cardinality(live) < call_limit THEN
        UPDATE upstream_call_window SET starts = live || moment WHERE only_row;
        RETURN QUERY SELECT TRUE, (extract(epoch FROM moment) * 1000000)::BIGINT, 0::BIGINT;
        RETURN;
    END IF;
    IF cardinality(live) <> previous THEN
        -- Drop the starts that left the window; a refusal writes nothing otherwise.
        UPDATE upstream_call_window SET starts = live WHERE only_row;
    END IF;
    -- One more fits once the (count - limit + 1) oldest have left the window.
    RETURN QUERY SELECT FALSE, NULL::BIGINT,
        coalesce(
            ceil(extract(epoch FROM live[cardinality(live) - call_limit + 1] + window_length - moment)
                 * 1000000)::BIGINT,
            -- A limit of zero: nothing ever fits; look again after a window.
            ceil(extract(epoch FROM window_length) * 1000000)::BIGINT);
END
$$;
