-- +goose Up
-- A decider participant's branch is settled as aborted by a tombstone: a row
-- under the name its outcome marker would have, so that the branch, still
-- open or reopened, can never insert its marker and commit afterwards. The
-- primary key decides between the two, whichever commits first.
ALTER TABLE tpcd_markers ADD COLUMN aborted boolean NOT NULL DEFAULT false;

-- +goose Down
ALTER TABLE tpcd_markers DROP COLUMN aborted;
