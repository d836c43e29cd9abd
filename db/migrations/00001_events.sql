-- +goose Up
-- One append-only log shared by every node of a cluster; rows are never updated,
-- only deleted by compaction once a transaction has ended everywhere.
CREATE TABLE tpcd_events (
    seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    node       text        NOT NULL,
    -- 0 marks a node-level event (cluster identity, recovery start, ...).
    tx         bigint      NOT NULL DEFAULT 0,
    kind       text        NOT NULL,
    payload    jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Recovery streams one node's log in seq order.
CREATE INDEX tpcd_events_node_seq ON tpcd_events (node, seq);
-- Per-transaction reads and compaction.
CREATE INDEX tpcd_events_node_tx_seq ON tpcd_events (node, tx, seq);

-- +goose Down
DROP TABLE tpcd_events;
