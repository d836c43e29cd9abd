-- +goose Up
-- Every query on the log reads one node's events (queries/events.sql), so the
-- primary key leads with node: it serves recovery's ordered scan in place of
-- the separate (node, seq) index, and each appended event updates two indexes
-- instead of three. seq stays unique across the table through its identity.
ALTER TABLE tpcd_events DROP CONSTRAINT tpcd_events_pkey;
DROP INDEX tpcd_events_node_seq;
ALTER TABLE tpcd_events ADD CONSTRAINT tpcd_events_pkey PRIMARY KEY (node, seq);

-- +goose Down
ALTER TABLE tpcd_events DROP CONSTRAINT tpcd_events_pkey;
ALTER TABLE tpcd_events ADD CONSTRAINT tpcd_events_pkey PRIMARY KEY (seq);
CREATE INDEX tpcd_events_node_seq ON tpcd_events (node, seq);
