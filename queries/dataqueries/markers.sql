-- MarkerInsert writes a transaction's outcome marker, with its idempotency keys
-- (NULL for none), inside the decider's data transaction about to commit, so
-- that the row exists exactly when that transaction committed.
-- name: MarkerInsert :exec
INSERT INTO tpcd_markers (gid, tx, keys)
VALUES (@gid, @tx, sqlc.narg(keys)::text[]);

-- MarkerExists tells, once PostgreSQL no longer holds a GID prepared, whether its
-- transaction committed (a tombstone is no commit marker).
-- name: MarkerExists :one
SELECT EXISTS (SELECT 1 FROM tpcd_markers WHERE gid = @gid AND NOT aborted);

-- MarkerSettle inserts a tombstone for a decider's branch unless a row of its name
-- exists; an insert that meets the branch's uncommitted marker waits until the
-- branch ends. Run on its own, it commits before anyone hears abort.
-- name: MarkerSettle :exec
INSERT INTO tpcd_markers (gid, tx, aborted)
VALUES (@gid, @tx, true)
ON CONFLICT (gid) DO NOTHING;

-- MarkerAborted reads whether the row of a decider's branch is a tombstone
-- (aborted) or its commit marker. It locks the row: the lock is written to
-- the WAL, so the statement's commit waits, as a commit that wrote does,
-- until a synchronous standby has everything committed before it, the row
-- read included.
-- name: MarkerAborted :one
SELECT aborted, keys FROM tpcd_markers WHERE gid = @gid FOR UPDATE;

-- MarkerDeleteByGIDs deletes the markers of transactions that are over, any number
-- in one statement.
-- name: MarkerDeleteByGIDs :exec
DELETE FROM tpcd_markers
WHERE gid = ANY (@gids::text[]);

-- MarkerList lists every commit marker with its keys, sorted: what a restart
-- reads.
-- name: MarkerList :many
SELECT gid, keys
FROM tpcd_markers
WHERE NOT aborted
ORDER BY gid;

-- MarkerListTombstones lists the decider branches settled as aborted, sorted.
-- name: MarkerListTombstones :many
SELECT gid
FROM tpcd_markers
WHERE aborted
ORDER BY gid;
