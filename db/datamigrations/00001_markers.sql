-- +goose Up
-- A participant inserts its marker inside the data transaction before PREPARE
-- TRANSACTION, so the row exists exactly when that transaction committed: after a
-- crash, marker present means committed, even if the log never recorded it.
CREATE TABLE tpcd_markers (
    gid        text        PRIMARY KEY,
    tx         bigint      NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE tpcd_markers;
