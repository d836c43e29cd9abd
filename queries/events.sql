-- EventAppendMany writes any number of events in one round trip (the arrays are
-- parallel, one element per event). WITH ORDINALITY and ORDER BY make the rows, and
-- so their seq values, follow the array order.
-- name: EventAppendMany :many
INSERT INTO tpcd_events (node, tx, kind, payload)
SELECT e.node, e.tx, e.kind, e.payload
FROM ROWS FROM (
        unnest(@nodes::text[]), unnest(@txs::bigint[]),
        unnest(@kinds::text[]), unnest(@payloads::jsonb[])
    ) WITH ORDINALITY AS e(node, tx, kind, payload, ord)
ORDER BY e.ord
RETURNING seq;

-- EventListByNode reads one keyset page of a node's log: callers pass the last seq
-- they saw, so a log of any size streams in bounded memory.
-- name: EventListByNode :many
SELECT seq, node, tx, kind, payload, created_at
FROM tpcd_events
WHERE node = @node AND seq > @after_seq
ORDER BY seq
LIMIT @max_rows;

-- EventListByTx reads one transaction's events of a node, in seq order.
-- name: EventListByTx :many
SELECT seq, node, tx, kind, payload, created_at
FROM tpcd_events
WHERE node = @node AND tx = @tx
ORDER BY seq;

-- EventDeleteByTxs compacts a node's log once the given transactions are over and
-- returns how many events it removed. Each transaction comes with the last seq of
-- the log when it ended: later events with the same id belong to another
-- transaction (a participant that joined a new cluster sees ids again). Violations
-- stay: they are evidence for replay long after the transaction ended.
-- name: EventDeleteByTxs :execrows
DELETE FROM tpcd_events e
USING ROWS FROM (unnest(@txs::bigint[]), unnest(@up_to_seqs::bigint[])) AS d(tx, up_to_seq)
WHERE e.node = @node AND e.tx = d.tx AND e.seq <= d.up_to_seq AND e.kind <> 'part.violation';

-- EventListNodes names every node that has events in this log, sorted.
-- name: EventListNodes :many
SELECT DISTINCT node
FROM tpcd_events
ORDER BY node;

-- EventCountByNode counts a node's events.
-- name: EventCountByNode :one
SELECT count(*)
FROM tpcd_events
WHERE node = @node;
