-- +goose Up
-- A decider commits its branch before the coordinator's log need hold the
-- transaction, so its commit marker carries the transaction's idempotency
-- keys: a coordinator that lost the transaction in a crash learns them from
-- the marker and still recognises a repeated call.
ALTER TABLE tpcd_markers ADD COLUMN keys text[];

-- +goose Down
ALTER TABLE tpcd_markers DROP COLUMN keys;
