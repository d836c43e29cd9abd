-- A transaction across both participants, run by psql -f.
\set ON_ERROR_STOP 1
BEGIN;
INSERT INTO kv (k, v) VALUES (:k0, 'psql -f');
INSERT INTO kv (k, v) VALUES (:k1, 'psql -f');
SELECT v FROM kv WHERE k = :k1;
COMMIT;
SET tpcd.node = all;
SELECT count(*) AS rows_everywhere FROM kv;
RESET tpcd.node;
