-- PreparedList lists the transactions of this database that tpcd prepared
-- (GIDs starting with "tpcd:") and nobody has committed or rolled back yet,
-- sorted, each with its transaction id widened to 64 bits as
-- pg_current_xact_id gives it: the epoch of the next id to be assigned, or
-- the one before when the prepared id's low bits are above the next id's
-- (it was assigned before the 32-bit counter last wrapped).
-- name: PreparedList :many
SELECT gid,
    ((((pg_snapshot_xmax(pg_current_snapshot())::text::bigint) >> 32)
      - CASE WHEN transaction::text::bigint > ((pg_snapshot_xmax(pg_current_snapshot())::text::bigint) & 4294967295) THEN 1 ELSE 0 END) << 32
     | transaction::text::bigint)::bigint AS xid
FROM pg_catalog.pg_prepared_xacts
WHERE database = current_database() AND gid LIKE 'tpcd:%'
ORDER BY gid;

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
