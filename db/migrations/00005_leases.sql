-- +goose Up
-- Who may write a node's log when several coordinator processes share it
-- (tpcd coordinator --lease): one row per node name (a slot), held by one
-- process until expires_at, by the log server's clock. Taking a slot over
-- raises generation; every append of the holder names the generation it
-- took, and an append naming an older one writes nothing, so a coordinator
-- that lost its slot cannot write to the log again.
CREATE TABLE tpcd_leases (
    node       text        PRIMARY KEY,
    holder     text        NOT NULL,
    generation bigint      NOT NULL,
    expires_at timestamptz NOT NULL
);

-- The generation again, in a row of its own that appends and compactions
-- hold FOR SHARE while they write: a take-over, which updates it, waits
-- for them, while a renewal, which updates only tpcd_leases, does not.
CREATE TABLE tpcd_lease_fences (
    node       text   PRIMARY KEY,
    generation bigint NOT NULL
);

-- +goose Down
DROP TABLE tpcd_lease_fences;
DROP TABLE tpcd_leases;
