-- +goose Up
-- The horizon of kept outcomes, one row per slot (tpcd coordinator
-- --slots): a coordinator prunes the outcomes of its own slot's ids only,
-- so each slot's horizon is the largest of its ids whose outcome was
-- deleted. A horizon shared by all slots would hold another slot's ids,
-- above every id of the lower slots, and a lower slot would then answer
-- "forgotten" where it knows the answer is "aborted". The one row kept so
-- far is slot 0's, the only slot there was.
ALTER TABLE tpcd_outcomes_horizon DROP COLUMN only_row;
ALTER TABLE tpcd_outcomes_horizon ADD COLUMN slot int NOT NULL DEFAULT 0;
ALTER TABLE tpcd_outcomes_horizon ALTER COLUMN slot DROP DEFAULT;
ALTER TABLE tpcd_outcomes_horizon ADD PRIMARY KEY (slot);

-- +goose Down
-- One horizon again, the largest of all slots': it may say forgotten where
-- a slot knew aborted, never the other way round.
UPDATE tpcd_outcomes_horizon SET max_tx = (SELECT max(max_tx) FROM tpcd_outcomes_horizon);
DELETE FROM tpcd_outcomes_horizon
WHERE slot <> (SELECT min(slot) FROM tpcd_outcomes_horizon);
ALTER TABLE tpcd_outcomes_horizon DROP COLUMN slot;
ALTER TABLE tpcd_outcomes_horizon ADD COLUMN only_row boolean NOT NULL DEFAULT true CHECK (only_row);
ALTER TABLE tpcd_outcomes_horizon ADD PRIMARY KEY (only_row);
