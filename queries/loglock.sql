-- The log lock is a session-level advisory lock in the log database, held
-- by a coordinator without a lease for as long as it runs, so that a
-- second one started on the same log refuses to serve. Its keys: 1953523556
-- is "tpcd" in ASCII, 1 the coordinator's log. PostgreSQL drops the lock
-- when the holder's session ends (its process exits, its connection breaks).

-- LogLockTry takes the log lock for this session if nobody holds it.
-- name: LogLockTry :one
SELECT pg_try_advisory_lock(1953523556, 1) AS locked;

-- LogLockHolder says which session holds the log lock (no row: none), for
-- the message of a coordinator that finds it held.
-- name: LogLockHolder :one
SELECT a.pid::int AS pid,
       (CASE WHEN a.client_port = -1 THEN 'a local socket'
             ELSE coalesce(host(a.client_addr), 'an address not shown to this role') END)::text AS client,
       coalesce(a.application_name, '')::text AS application,
       a.backend_start
FROM pg_catalog.pg_locks l
JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted
  AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
  AND l.classid = 1953523556 AND l.objid = 1 AND l.objsubid = 2
LIMIT 1;

-- LogLockMine says whether this session still holds the log lock.
-- name: LogLockMine :one
SELECT EXISTS (
    SELECT 1 FROM pg_catalog.pg_locks
    WHERE pid = pg_backend_pid() AND locktype = 'advisory' AND granted
      AND classid = 1953523556 AND objid = 1 AND objsubid = 2
) AS held;

-- LogLockEndSession ends a session that held the log lock for this very
-- coordinator before its connection broke, which the server has not
-- noticed yet. The session ends soon after, not at once.
-- name: LogLockEndSession :one
SELECT pg_terminate_backend(@pid::int) AS ended;
