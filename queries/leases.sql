-- LeaseTake takes node's slot for @holder until @ttl_seconds from now, if nobody
-- holds it or its lease has expired, and returns the slot's new generation
-- (no row when another holds it). LeaseFence then sets the fence, in the
-- same transaction.
-- name: LeaseTake :one
INSERT INTO tpcd_leases AS l (node, holder, generation, expires_at)
VALUES (@node, @holder, 1, now() + make_interval(secs => @ttl_seconds::float8))
ON CONFLICT (node) DO UPDATE
SET holder = excluded.holder, generation = l.generation + 1, expires_at = excluded.expires_at
WHERE l.expires_at < now()
RETURNING generation;

-- LeaseRenew extends the lease of @generation's holder until @ttl_seconds from now;
-- no row means the slot was taken over.
-- name: LeaseRenew :one
UPDATE tpcd_leases
SET expires_at = now() + make_interval(secs => @ttl_seconds::float8)
WHERE node = @node AND generation = @generation
RETURNING expires_at;

-- LeaseRelease ends the lease of @generation's holder at once, so that a
-- standby takes over without waiting for it to expire.
-- name: LeaseRelease :exec
UPDATE tpcd_leases
SET expires_at = now()
WHERE node = @node AND generation = @generation;

-- LeaseOf reads node's slot: who holds it, under which generation, and
-- how long its lease lasts from now by the log server's clock.
-- name: LeaseOf :one
SELECT holder, generation, extract(epoch FROM expires_at - now())::float8 AS remaining_seconds
FROM tpcd_leases
WHERE node = @node;

-- LeaseFence sets node's fence to the generation a take-over raised. It
-- waits for the appends and compactions in flight under the old one (they
-- hold the fence FOR SHARE), and every later one sees the new generation.
-- name: LeaseFence :exec
INSERT INTO tpcd_lease_fences AS f (node, generation)
VALUES (@node, @generation)
ON CONFLICT (node) DO UPDATE SET generation = excluded.generation;

-- LeaseHeld locks node's fence FOR SHARE, in the caller's transaction, if
-- its generation is still @generation (no row otherwise): what the
-- transaction writes to node's log then commits before any take-over.
-- name: LeaseHeld :one
SELECT generation
FROM tpcd_lease_fences
WHERE node = @node AND generation = @generation
FOR SHARE;

-- SlotsOf reads how many slots the log's coordinators serve (no row: one).
-- name: SlotsOf :one
SELECT slots FROM tpcd_slots WHERE only_row FOR UPDATE;

-- SlotsSet records how many slots the log's coordinators serve.
-- name: SlotsSet :exec
INSERT INTO tpcd_slots (only_row, slots) VALUES (true, @slots::int)
ON CONFLICT (only_row) DO UPDATE SET slots = excluded.slots;

-- CoordinatorLeasesLive counts the coordinators' slots whose lease has not
-- expired, by the log server's clock.
-- name: CoordinatorLeasesLive :one
SELECT count(*)::int AS live FROM tpcd_leases
WHERE (node = 'coordinator' OR node LIKE 'coordinator.%') AND expires_at > now();

-- StandbyAnnounce records that @holder waits for one of @slots, until
-- @ttl_seconds from now (renewed while it waits).
-- name: StandbyAnnounce :exec
INSERT INTO tpcd_standbys (holder, slots, expires_at)
VALUES (@holder, @slots::int[], now() + make_interval(secs => @ttl_seconds::float8))
ON CONFLICT (holder) DO UPDATE SET slots = excluded.slots, expires_at = excluded.expires_at;

-- StandbyWithdraw removes @holder's announcement (it took a slot or
-- stopped), and any that expired long ago, of standbys that died waiting.
-- name: StandbyWithdraw :exec
DELETE FROM tpcd_standbys
WHERE holder = @holder OR expires_at < now() - interval '1 hour';

-- StandbyWaitsFor counts the standbys whose announcement has not expired
-- and that have waited for @slot for at least @waited_seconds.
-- name: StandbyWaitsFor :one
SELECT count(*)::int AS waiting FROM tpcd_standbys
WHERE @slot::int = ANY (slots) AND expires_at > now()
  AND since <= now() - make_interval(secs => @waited_seconds::float8);
