-- PreparedListGIDs lists the transactions of this database that tpcd prepared
-- (GIDs starting with "tpcd:") and nobody has committed or rolled back yet, sorted.
-- name: PreparedListGIDs :many
SELECT gid
FROM pg_catalog.pg_prepared_xacts
WHERE database = current_database() AND gid LIKE 'tpcd:%'
ORDER BY gid;

-- XactWroteNothing tells, inside a transaction, whether it has written nothing
-- yet (it has no transaction id), so it can commit at once instead of being
-- prepared.
-- name: XactWroteNothing :one
SELECT (pg_current_xact_id_if_assigned() IS NULL)::boolean AS wrote_nothing;
