-- Each transaction spans both participants: a counter on each, and an
-- upsert routed by its shard key. tpcd commits all of it or none.
-- (SET tpcd.node, not a /* tpcd:node=N */ comment: pgbench would take
-- :node for one of its variables.)
\set key random(1, 1000)
BEGIN;
SET tpcd.node = 0;
UPDATE counters SET n = n + 1 WHERE id = 1;
SET tpcd.node = 1;
UPDATE counters SET n = n + 1 WHERE id = 1;
RESET tpcd.node;
INSERT INTO kv (k, v) VALUES (:key, 'pgbench') ON CONFLICT (k) DO UPDATE SET v = 'pgbench again';
COMMIT;
