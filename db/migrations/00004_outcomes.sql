-- +goose Up
-- The outcomes of the transactions a coordinator ended, kept after log
-- compaction removed their events, so that status and a call repeated with
-- an idempotency key get the true answer for as long as the operator chose
-- to keep it (--keep-outcomes). The coordinator saves the outcomes of all
-- the transactions that ended since its last save (about a second) as one
-- row, before it lets compaction remove their events, and deletes a row once
-- its newest outcome is older than the window. One row per save, with the
-- ids in arrays, costs a few bytes of WAL per transaction where a row each
-- would cost a tuple and an index entry.
CREATE TABLE tpcd_outcomes (
    -- When the newest of the row's transactions ended.
    ended_at  timestamptz NOT NULL,
    -- The smallest and largest id in the row, to find an id's row.
    first_tx  bigint      NOT NULL,
    last_tx   bigint      NOT NULL,
    committed bigint[]    NOT NULL,
    aborted   bigint[]    NOT NULL,
    -- Why each of aborted aborted (cut to 200 bytes by the engine).
    reasons   text[]      NOT NULL,
    CONSTRAINT tpcd_outcomes_reasons CHECK (cardinality(aborted) = cardinality(reasons))
);
-- A status question about id N reads the rows with last_tx >= N: the few
-- saved around the time N ended, and every later one it must skip.
CREATE INDEX tpcd_outcomes_last_tx ON tpcd_outcomes (last_tx);

-- The keys clients gave those transactions, one row each, with the outcome,
-- so that a call repeated with its key is answered in one lookup. A key
-- names one transaction; after its row is deleted with age, a client may
-- use it again.
CREATE TABLE tpcd_outcome_keys (
    key       text        PRIMARY KEY,
    tx        bigint      NOT NULL,
    ended_at  timestamptz NOT NULL,
    committed boolean     NOT NULL,
    reason    text        NOT NULL DEFAULT ''
);

-- The newest transaction id whose outcome was deleted for age: a status
-- question about a larger id that finds no outcome is about a transaction
-- that ended before anything of it was logged, hence aborted; about a
-- smaller one, the answer may have been deleted, hence forgotten.
CREATE TABLE tpcd_outcomes_horizon (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    max_tx   bigint  NOT NULL
);

-- +goose Down
DROP TABLE tpcd_outcomes_horizon;
DROP TABLE tpcd_outcome_keys;
DROP TABLE tpcd_outcomes;
