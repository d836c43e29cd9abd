-- +goose Up
-- How many slots the coordinators of this log serve at once (tpcd
-- coordinator --slots): every coordinator must agree, since an idempotency
-- key belongs to the slot it hashes to among that many. Every log starts
-- with one, as every log was before slots; the row is there from the
-- start, so that a coordinator changing the number locks it.
CREATE TABLE tpcd_slots (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    slots    int     NOT NULL CHECK (slots >= 1)
);
INSERT INTO tpcd_slots (only_row, slots) VALUES (true, 1);

-- +goose Down
DROP TABLE tpcd_slots;
