-- OutcomesSave keeps the outcomes of ended transactions, one row each. A row
-- already there stays as it is: a restart saves again what it finds ended in
-- the log, which may have been saved before the crash.
-- name: OutcomesSave :exec
INSERT INTO tpcd_outcomes (tx, ended_at, outcome, reason)
SELECT o.tx, o.ended_at, o.outcome, o.reason
FROM ROWS FROM (unnest(@txs::bigint[]), unnest(@ended_at::timestamptz[]), unnest(@outcomes::text[]), unnest(@reasons::text[])) AS o(tx, ended_at, outcome, reason)
ON CONFLICT (tx) DO NOTHING;

-- OutcomeKeysSave records the idempotency keys of saved outcomes. A key still
-- held by an older transaction moves to the newer one: the engine lets a
-- client use a key again only once the old one was forgotten.
-- name: OutcomeKeysSave :exec
INSERT INTO tpcd_outcome_keys (key, tx)
SELECT k.key, k.tx
FROM ROWS FROM (unnest(@keys::text[]), unnest(@txs::bigint[])) AS k(key, tx)
ON CONFLICT (key) DO UPDATE SET tx = excluded.tx;

-- OutcomesByKey finds the transactions some keys named, with their outcomes.
-- name: OutcomesByKey :many
SELECT k.key, o.tx, o.outcome, o.reason
FROM tpcd_outcome_keys k
JOIN tpcd_outcomes o ON o.tx = k.tx
WHERE k.key = ANY (@keys::text[]);

-- OutcomeByTx finds one transaction's outcome.
-- name: OutcomeByTx :one
SELECT tx, ended_at, outcome, reason
FROM tpcd_outcomes
WHERE tx = @tx;

-- OutcomesPrune deletes the outcomes of transactions that ended before
-- @before (their keys go with them) and raises the horizon to the largest id
-- deleted, in one statement. It returns how many it deleted.
-- name: OutcomesPrune :one
WITH pruned AS (
    DELETE FROM tpcd_outcomes
    WHERE ended_at < @before::timestamptz
    RETURNING tx
), horizon AS (
    INSERT INTO tpcd_outcomes_horizon (max_tx)
    SELECT max(tx) FROM pruned HAVING count(*) > 0
    ON CONFLICT (only_row) DO UPDATE SET max_tx = greatest(tpcd_outcomes_horizon.max_tx, excluded.max_tx)
)
SELECT count(*) FROM pruned;

-- OutcomesHorizon reads the largest transaction id whose outcome was deleted
-- for age (0 if none was).
-- name: OutcomesHorizon :one
SELECT coalesce((SELECT max_tx FROM tpcd_outcomes_horizon), 0)::bigint AS max_tx;
