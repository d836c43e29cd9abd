-- OutcomesSave keeps the outcomes of the transactions that ended since the
-- last save as one row. A restart saves again what it finds ended in its
-- log; a transaction then has two rows, which agree.
-- name: OutcomesSave :exec
INSERT INTO tpcd_outcomes (ended_at, first_tx, last_tx, committed, aborted, reasons)
VALUES (@ended_at, @first_tx, @last_tx, @committed::bigint[], @aborted::bigint[], @reasons::text[]);

-- OutcomeKeysSave records the idempotency keys of saved outcomes. A key still
-- held by an older transaction moves to the newer one: the engine lets a
-- client use a key again only once the old one was forgotten.
-- name: OutcomeKeysSave :exec
INSERT INTO tpcd_outcome_keys (key, tx, ended_at, committed, reason)
SELECT k.key, k.tx, @ended_at, k.committed, k.reason
FROM ROWS FROM (unnest(@keys::text[]), unnest(@txs::bigint[]), unnest(@committed::boolean[]), unnest(@reasons::text[])) AS k(key, tx, committed, reason)
ON CONFLICT (key) DO UPDATE SET tx = excluded.tx, ended_at = excluded.ended_at, committed = excluded.committed, reason = excluded.reason;

-- OutcomesByKey finds the transactions some keys named, with their outcomes.
-- name: OutcomesByKey :many
SELECT key, tx, committed, reason
FROM tpcd_outcome_keys
WHERE key = ANY (@keys::text[]);

-- OutcomeKeysCount counts the keys kept.
-- name: OutcomeKeysCount :one
SELECT count(*)::bigint AS keys FROM tpcd_outcome_keys;

-- OutcomeKeysAfter lists, in order, up to @n keys kept that sort after
-- @after: the coordinator reads them all, a page at a time, into its key
-- filter.
-- name: OutcomeKeysAfter :many
SELECT key FROM tpcd_outcome_keys
WHERE key > @after::text
ORDER BY key
LIMIT @n::int;

-- OutcomeByTx finds one transaction's outcome: found is false when no row
-- holds it. Only rows of ids from @first_tx up to @end_tx (the slot's) are
-- read.
-- name: OutcomeByTx :one
SELECT
    coalesce(bool_or(@tx::bigint = ANY (committed)), false)::boolean AS committed,
    coalesce(bool_or(@tx::bigint = ANY (aborted)), false)::boolean AS aborted,
    coalesce(max(reasons[array_position(aborted, @tx::bigint)]), '')::text AS reason
FROM tpcd_outcomes
WHERE last_tx >= @tx::bigint AND last_tx < @end_tx::bigint
  AND first_tx <= @tx::bigint AND first_tx >= @first_tx::bigint;

-- OutcomesPrune deletes the outcomes of transactions that ended before
-- @before, with their keys, and raises the horizon to the largest id
-- deleted, in one statement. It returns how many rows it deleted. Only ids
-- from @first_tx up to, not including, @end_tx are deleted: a coordinator
-- prunes its own slot's (api.FirstTxOfSlot), each by its own window, and
-- raises its own slot's horizon.
-- name: OutcomesPrune :one
WITH pruned AS (
    DELETE FROM tpcd_outcomes
    WHERE ended_at < @before::timestamptz
      AND first_tx >= @first_tx::bigint AND last_tx < @end_tx::bigint
    RETURNING last_tx
), pruned_keys AS (
    DELETE FROM tpcd_outcome_keys
    WHERE ended_at < @before::timestamptz
      AND tx >= @first_tx::bigint AND tx < @end_tx::bigint
    RETURNING tx
), horizon AS (
    INSERT INTO tpcd_outcomes_horizon (slot, max_tx)
    SELECT @slot::int, max(last_tx) FROM pruned HAVING count(*) > 0
    ON CONFLICT (slot) DO UPDATE SET max_tx = greatest(tpcd_outcomes_horizon.max_tx, excluded.max_tx)
)
SELECT ((SELECT count(*) FROM pruned) + (SELECT count(*) FROM pruned_keys))::bigint AS deleted;

-- OutcomesHorizon reads the largest transaction id of @slot whose outcome
-- was deleted for age (0 if none was).
-- name: OutcomesHorizon :one
SELECT coalesce((SELECT max_tx FROM tpcd_outcomes_horizon WHERE slot = @slot::int), 0)::bigint AS max_tx;
