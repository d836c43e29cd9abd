-- LogAppend writes one row of a node's log: the events of one append, in one
-- round trip whatever their number.
-- name: LogAppend :one
INSERT INTO tpcd_log (node, txs, events)
VALUES (@node, @txs::bigint[], @events::jsonb)
RETURNING seq;

-- LogAppendFenced is LogAppend for a node whose slot is leased: it writes
-- the row only while the slot's fence still holds @generation. The share
-- lock on the fence makes a take-over wait for this append to commit, and
-- an append that waited for a take-over sees the new generation and writes
-- nothing (no row returned).
-- name: LogAppendFenced :one
INSERT INTO tpcd_log (node, txs, events)
SELECT f.node, @txs::bigint[], @events::jsonb
FROM tpcd_lease_fences f
WHERE f.node = @node AND f.generation = @generation
FOR SHARE
RETURNING seq;

-- LogListByNode reads one keyset page of a node's rows: callers pass the last seq
-- they saw, so a log of any size streams in bounded memory.
-- name: LogListByNode :many
SELECT seq, created_at, node, txs, events
FROM tpcd_log
WHERE node = @node AND seq > @after_seq
ORDER BY seq
LIMIT @max_rows;

-- LogListByTx reads the rows of a node that hold events of one transaction, in seq
-- order. No index serves it: it is an operator's query (replay --tx), and the
-- index it would need would cost every append.
-- name: LogListByTx :many
SELECT seq, created_at, node, txs, events
FROM tpcd_log
WHERE node = @node AND @tx::bigint = ANY (txs)
ORDER BY seq;

-- LogCompact removes the events of ended transactions from a node's log in one
-- statement, so a crash leaves all of it done or none: it deletes the rows
-- @drop, every transaction of which has ended, and from each row @cut_seqs[i]
-- that stays (it holds a transaction still live) it removes the events of
-- transaction @cut_txs[i], so that no row keeps part of an ended transaction's
-- history, which a restart would fold into a transaction that never ends. Rows
-- with a node-level event (cluster identity, epochs, id reservations) and
-- violations stay whatever the caller asks: they fence, or are evidence for
-- replay long after their transactions ended. It returns how many rows it
-- deleted and how many it trimmed.
-- name: LogCompact :one
WITH dropped AS (
    DELETE FROM tpcd_log d
    WHERE d.node = @node::text
      AND d.seq = ANY (@drop::bigint[])
      AND NOT 0 = ANY (d.txs)
      AND NOT d.events @> '[{"type": "part.violation"}]'
    RETURNING d.seq
), cut AS (
    SELECT c.seq, array_agg(c.tx) AS txs
    FROM ROWS FROM (unnest(@cut_seqs::bigint[]), unnest(@cut_txs::bigint[])) AS c(seq, tx)
    WHERE NOT c.seq = ANY (@drop::bigint[])
    GROUP BY c.seq
), kept AS (
    SELECT l.seq, k.txs, k.events
    FROM tpcd_log l
    JOIN cut c ON c.seq = l.seq
    CROSS JOIN LATERAL (
        SELECT array_agg(e.tx ORDER BY e.ord) AS txs, jsonb_agg(e.event ORDER BY e.ord) AS events
        FROM ROWS FROM (unnest(l.txs), jsonb_array_elements(l.events)) WITH ORDINALITY AS e(tx, event, ord)
        WHERE NOT e.tx = ANY (c.txs) OR e.event ->> 'type' = 'part.violation'
    ) k
    WHERE l.node = @node::text AND k.txs IS NOT NULL AND k.txs <> l.txs
), trimmed AS (
    UPDATE tpcd_log l
    SET txs = k.txs, events = k.events
    FROM kept k
    WHERE l.node = @node::text AND l.seq = k.seq
    RETURNING l.seq
)
SELECT (SELECT count(*) FROM dropped) AS deleted, (SELECT count(*) FROM trimmed) AS trimmed;

-- LogListNodes names every node that has rows in this log, sorted.
-- name: LogListNodes :many
SELECT DISTINCT node
FROM tpcd_log
ORDER BY node;

-- LogCountByNode counts a node's rows and the events they hold.
-- name: LogCountByNode :one
SELECT count(*) AS rows, coalesce(sum(jsonb_array_length(events)), 0)::bigint AS events
FROM tpcd_log
WHERE node = @node;

-- LogLastByNode reads a node's newest row: its seq and how many events it holds
-- (no row if the node has none).
-- name: LogLastByNode :one
SELECT seq, jsonb_array_length(events)::int AS events
FROM tpcd_log
WHERE node = @node
ORDER BY seq DESC
LIMIT 1;
