-- +goose Up
-- One row per append instead of one per event: a node's loop appends every
-- event its engine produced meanwhile in one round trip (group commit), and
-- each row costs a heap insert and an index entry whatever its size, so the
-- events of one append share a row. txs[i] is the transaction of events[i]
-- (0 for a node-level event): compaction deletes a row once all of them have
-- ended, or removes the events of the ended ones from a row that stays, and
-- replay finds one transaction's rows by it, all without parsing events.
-- The primary key is the only index: recovery reads one node's rows in seq
-- order; compaction deletes by (node, seq); a transaction's rows are looked
-- up only by an operator's replay, for which a scan of one node's rows will
-- do. Fixed-width columns come first, so no padding sits between them.
CREATE TABLE tpcd_log (
    seq        bigint      GENERATED ALWAYS AS IDENTITY,
    created_at timestamptz NOT NULL DEFAULT now(),
    node       text        NOT NULL,
    txs        bigint[]    NOT NULL,
    -- The event envelopes ({"type", "v", "data"}) in the order they were
    -- produced.
    events     jsonb       NOT NULL,
    PRIMARY KEY (node, seq),
    CONSTRAINT tpcd_log_one_tx_per_event CHECK (
        jsonb_typeof(events) = 'array' AND jsonb_array_length(events) = cardinality(txs))
);

-- Every old event becomes a row of its own, under its old seq, so that the
-- log keeps its order and replay's references stay what they were.
INSERT INTO tpcd_log (seq, created_at, node, txs, events)
OVERRIDING SYSTEM VALUE
SELECT seq, created_at, node, ARRAY[tx], jsonb_build_array(payload)
FROM tpcd_events
ORDER BY seq;

SELECT setval(pg_get_serial_sequence('tpcd_log', 'seq'), coalesce(max(seq), 1), max(seq) IS NOT NULL)
FROM tpcd_log;

DROP TABLE tpcd_events;

-- +goose Down
-- Each event of a row becomes a row of tpcd_events again, in log order; seqs
-- are drawn anew since a row's events shared one.
CREATE TABLE tpcd_events (
    seq        bigint GENERATED ALWAYS AS IDENTITY,
    node       text        NOT NULL,
    tx         bigint      NOT NULL DEFAULT 0,
    kind       text        NOT NULL,
    payload    jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tpcd_events_pkey PRIMARY KEY (node, seq)
);
CREATE INDEX tpcd_events_node_tx_seq ON tpcd_events (node, tx, seq);

INSERT INTO tpcd_events (node, tx, kind, payload, created_at)
SELECT l.node, e.tx, coalesce(e.event ->> 'type', ''), e.event, l.created_at
FROM tpcd_log l
CROSS JOIN LATERAL ROWS FROM (unnest(l.txs), jsonb_array_elements(l.events)) WITH ORDINALITY AS e(tx, event, ord)
ORDER BY l.seq, e.ord;

DROP TABLE tpcd_log;
