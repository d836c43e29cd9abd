-- MarkerInsert writes a transaction's outcome marker inside the data transaction
-- about to be prepared, so that the row exists exactly when that transaction
-- committed.
-- name: MarkerInsert :exec
INSERT INTO tpcd_markers (gid, tx)
VALUES (@gid, @tx);

-- MarkerExists tells, once PostgreSQL no longer holds a GID prepared, whether its
-- transaction committed.
-- name: MarkerExists :one
SELECT EXISTS (SELECT 1 FROM tpcd_markers WHERE gid = @gid);

-- MarkerDeleteByGIDs deletes the markers of transactions that are over, any number
-- in one statement.
-- name: MarkerDeleteByGIDs :exec
DELETE FROM tpcd_markers
WHERE gid = ANY (@gids::text[]);

-- MarkerListGIDs lists every marker, sorted: what a restart reads.
-- name: MarkerListGIDs :many
SELECT gid
FROM tpcd_markers
ORDER BY gid;
