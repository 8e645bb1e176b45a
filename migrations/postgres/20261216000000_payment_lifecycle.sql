-- The payment lifecycle (renew, suspend, resume, revoke, seats): the ledger's records name their
-- operation, and two tables keep each license's event order and history.
-- PostgreSQL flavour of migrations/sqlite/20261216000000_payment_lifecycle.sql; keep them in step.
-- Existing records stay as they are: they were all IssueLicense calls, which the default says.

-- Which RPC a record is for. The fingerprint covers the operation too (a request id reused for
-- another operation is a conflict); this column is for the operator and the audit. A finished
-- record of any operation is `issued` (it has an answer): `license_id` is then the first
-- license the call addressed and `license_json` the whole stored answer.
ALTER TABLE issuance_records ADD COLUMN operation TEXT NOT NULL DEFAULT 'IssueLicense';

-- `ledger show <license-id>` and the audit look records up by license.
CREATE INDEX issuance_records_license_id_idx ON issuance_records (license_id);

-- One row per license a lifecycle call has touched: the order of its suspend and resume events,
-- whether it is revoked, and the lease of the one attempt writing to it upstream right now.
-- Every write is one statement fenced on `holder_token`, so two replicas never write to one
-- license at the same time, and an older event never overwrites a newer one.
CREATE TABLE license_event_order (
    license_id       TEXT    NOT NULL PRIMARY KEY,
    -- The provider's time of the last suspend or resume applied (unix ms), and what it set.
    event_at         BIGINT,
    suspended        BIGINT CHECK (suspended IN (0, 1)),
    event_caller     TEXT,
    event_request_id TEXT,
    -- Set once a revocation was applied: terminal, later suspends and resumes are superseded.
    revoked          BIGINT NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1)),
    -- The attempt writing to the license upstream ('' when none) and until when it may.
    holder_token     TEXT    NOT NULL DEFAULT '',
    holder_until     BIGINT NOT NULL DEFAULT 0,
    updated_at       BIGINT NOT NULL
);

-- What each call did to each license: one row per (caller, request id, license). A row is
-- `pending` from just before its upstream write until the answer is known; a pending row left
-- by an attempt that died or lost its reply is settled by the next writer to the license,
-- which reads the license back (expiry later than `expires_before` means a renewal happened).
CREATE TABLE license_history (
    caller            TEXT    NOT NULL,
    request_id        TEXT    NOT NULL,
    license_id        TEXT    NOT NULL,
    subscription_id   TEXT,
    operation         TEXT    NOT NULL,
    result            TEXT    NOT NULL
        CHECK (result IN ('pending', 'applied', 'superseded', 'not_applied', 'rejected')),
    -- Suspend and resume: the provider's event time (unix ms).
    event_at          BIGINT,
    -- Renew: the expiry before and after (unix ms; NULL when the license had none).
    expires_before    BIGINT,
    expires_after     BIGINT,
    -- What the write sets, so a pending row can be checked against the license read back:
    -- the expiry asked for, the seats asked for, the revocation entry.
    wanted_expires_at BIGINT,
    wanted_seats      BIGINT,
    revocation        TEXT,
    -- A short note for the operator (why superseded, what was rejected).
    detail            TEXT,
    attempts          BIGINT NOT NULL CHECK (attempts >= 1),
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    PRIMARY KEY (caller, request_id, license_id)
);

CREATE INDEX license_history_license_idx ON license_history (license_id, created_at);
CREATE INDEX license_history_request_idx ON license_history (request_id);
