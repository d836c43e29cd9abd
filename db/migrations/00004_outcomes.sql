-- +goose Up
-- The outcome of every transaction a coordinator ended, kept after log
-- compaction removed its events, so that status and a call repeated with an
-- idempotency key get the true answer for as long as the operator chose to
-- keep it (--keep-outcomes). The coordinator writes these rows in batches
-- before it lets compaction remove the events, and deletes them once older
-- than the window.
CREATE TABLE tpcd_outcomes (
    tx       bigint      PRIMARY KEY,
    ended_at timestamptz NOT NULL,
    -- 'commit' or 'abort', as engine.Outcome names them.
    outcome  text        NOT NULL CHECK (outcome IN ('commit', 'abort')),
    -- Why an abort happened, cut to 200 bytes by the engine; empty for a
    -- commit.
    reason   text        NOT NULL DEFAULT ''
);

-- The keys clients gave those transactions. A key names one transaction;
-- after its row is deleted with the transaction's, a client may use it again.
CREATE TABLE tpcd_outcome_keys (
    key text   PRIMARY KEY,
    tx  bigint NOT NULL REFERENCES tpcd_outcomes (tx) ON DELETE CASCADE
);
CREATE INDEX tpcd_outcome_keys_tx ON tpcd_outcome_keys (tx);

-- The newest transaction id whose outcome was deleted for age: a status
-- question about a larger id that finds no row is about a transaction that
-- ended before anything of it was logged, hence aborted; about a smaller
-- one, the answer may have been deleted, hence forgotten.
CREATE TABLE tpcd_outcomes_horizon (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    max_tx   bigint  NOT NULL
);

-- +goose Down
DROP TABLE tpcd_outcomes_horizon;
DROP TABLE tpcd_outcome_keys;
DROP TABLE tpcd_outcomes;
