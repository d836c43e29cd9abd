-- +goose Up
-- Coordinators waiting for a slot of a log whose coordinators serve
-- several at once (tpcd coordinator --slots), each announced until
-- expires_at and renewed while it waits: a coordinator serving a slot it
-- adopted, because that slot's coordinator stopped, hands the slot back
-- to one of them, so that every slot has a process of its own again.
CREATE TABLE tpcd_standbys (
    holder     text        PRIMARY KEY,
    slots      int[]       NOT NULL,
    -- since it waits: a slot goes back only to one that waited a while,
    -- not to one that comes and goes.
    since      timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);

-- +goose Down
DROP TABLE tpcd_standbys;
