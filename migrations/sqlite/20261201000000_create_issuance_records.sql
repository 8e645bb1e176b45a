-- The issuance ledger: one row per (caller, request_id), the caller's idempotency key.
-- SQLite flavour: INTEGER is 64-bit, and STRICT makes SQLite enforce the column types.
-- Equivalent to migrations/postgres/20261201000000_create_issuance_records.sql; keep them in step.
-- Times are unix milliseconds (INTEGER) written by the gateway, not the database clock, so
-- both backends store and compare them the same way (see src/ledger/mod.rs).
CREATE TABLE issuance_records (
    caller           TEXT   NOT NULL,
    request_id       TEXT   NOT NULL,
    fingerprint      TEXT   NOT NULL,
    state            TEXT   NOT NULL CHECK (state IN ('pending', 'issued', 'rejected')),
    -- Fencing token (a UUID) of the attempt that holds, or last held, the right to issue.
    attempt_token    TEXT   NOT NULL,
    attempts         INTEGER NOT NULL CHECK (attempts >= 1),
    license_id       TEXT,
    license_json     TEXT,
    error_reason     TEXT,
    error_message    TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    lease_expires_at INTEGER NOT NULL,
    PRIMARY KEY (caller, request_id),
    -- A finished record always carries its outcome, so a replay never has to guess.
    CHECK (state <> 'issued' OR (license_id IS NOT NULL AND license_json IS NOT NULL)),
    CHECK (state <> 'rejected' OR (error_reason IS NOT NULL AND error_message IS NOT NULL))
) STRICT;

-- Operator listings and metrics filter by state, newest first.
CREATE INDEX issuance_records_state_idx ON issuance_records (state, created_at);
CREATE INDEX issuance_records_created_idx ON issuance_records (created_at);
-- The operator view looks a request id up across callers; the primary key leads with caller.
CREATE INDEX issuance_records_request_id_idx ON issuance_records (request_id);
