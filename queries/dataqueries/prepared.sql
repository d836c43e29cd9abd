-- PreparedList lists the transactions of this database that tpcd prepared
-- (GIDs starting with "tpcd:") and nobody has committed or rolled back yet,
-- sorted, each with its transaction id widened to 64 bits as
-- pg_current_xact_id gives it. A prepared transaction is still running, so
-- its id is at least the snapshot's xmin and less than 2^31 above it: it is
-- the first id from xmin on whose low 32 bits are the prepared one's.
-- name: PreparedList :many
SELECT p.gid,
    (s.xmin + ((p.transaction::text::bigint - (s.xmin & 4294967295) + 4294967296) % 4294967296))::bigint AS xid
FROM pg_catalog.pg_prepared_xacts AS p,
    (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin) AS s
WHERE p.database = current_database() AND p.gid LIKE 'tpcd:%'
ORDER BY p.gid;

-- XactsCommitted returns those of some transaction ids (64 bits) that the
-- commit log shows committed.
-- name: XactsCommitted :many
SELECT u.x::bigint AS xid
FROM unnest(@xids::bigint[]) AS u(x)
WHERE pg_xact_status(u.x::text::xid8) = 'committed';

-- XactStatus tells what the commit log says of one transaction id:
-- 'committed', 'aborted', 'in progress', or '' when it is too old to know.
-- name: XactStatus :one
SELECT coalesce(pg_xact_status((@xid::bigint)::text::xid8), '')::text AS status;

-- XactWroteNothing tells, inside a transaction, whether it has written nothing
-- yet (it has no transaction id), so it can commit at once instead of being
-- prepared.
-- name: XactWroteNothing :one
SELECT (pg_current_xact_id_if_assigned() IS NULL)::boolean AS wrote_nothing;
