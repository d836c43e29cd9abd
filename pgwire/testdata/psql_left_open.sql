-- psql -f ends here with the transaction open: psql leaves, tpcd rolls back.
BEGIN;
INSERT INTO kv (k, v) VALUES (:k0, 'left behind?');
INSERT INTO kv (k, v) VALUES (:k1, 'left behind?');
