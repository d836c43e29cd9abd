"""Drives tpcd's PostgreSQL front door with psycopg2, as an application
would. Usage: psycopg2_client.py DSN WRONG_DSN KEY_ON_0 KEY_ON_1 KEY_LEFT.
Prints one line per check; exits non-zero at the first surprise.
The Go test (clients_test.go) then checks the rows on the data servers."""
import sys

import psycopg2
import psycopg2.errors

dsn, wrong_dsn, k0, k1, k_left = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])


def expect(cond, what):
    if not cond:
        print("FAILED:", what)
        sys.exit(1)
    print("ok:", what)


# A transaction across both participants (psycopg2 sends BEGIN itself).
conn = psycopg2.connect(dsn)
cur = conn.cursor()
cur.execute("INSERT INTO kv (k, v) VALUES (%s, %s)", (k0, "psycopg2"))
expect(cur.rowcount == 1, "insert on participant 0")
cur.execute("INSERT INTO kv (k, v) VALUES (%s, %s)", (k1, "psycopg2"))
conn.commit()
cur.execute("SELECT v FROM kv WHERE k = %s", (k1,))
expect(cur.fetchone() == ("psycopg2",), "read back from participant 1")
conn.commit()

# A failing statement: the participant's SQLSTATE, then the block is failed.
try:
    cur.execute("INSERT INTO kv (k, v) VALUES (%s, 'dup')", (k0,))
    expect(False, "duplicate refused")
except psycopg2.errors.UniqueViolation as e:
    expect(e.pgcode == "23505" and e.diag.message_detail is not None, "duplicate refused with 23505 and a detail")
try:
    cur.execute("SELECT 1")
    expect(False, "failed block refuses statements")
except psycopg2.errors.InFailedSqlTransaction as e:
    expect(e.pgcode == "25P02", "failed block answers 25P02")
conn.rollback()

# A routing error names the choices.
try:
    cur.execute("UPDATE kv SET v = 'x'")
    expect(False, "unroutable update refused")
except psycopg2.Error as e:
    expect(e.pgcode == "22023" and "tpcd:node=N" in (e.diag.message_hint or ""), "unroutable update refused with the choices")
conn.rollback()

# An unsupported statement.
try:
    cur.execute("SAVEPOINT s")
    expect(False, "savepoint refused")
except psycopg2.errors.FeatureNotSupported as e:
    expect(e.pgcode == "0A000", "savepoint refused with 0A000")
conn.rollback()
conn.close()

# A client that leaves mid-transaction: its row must not stay.
conn = psycopg2.connect(dsn)
cur = conn.cursor()
cur.execute("INSERT INTO kv (k, v) VALUES (%s, 'left behind?')", (k_left,))
conn.close()
print("ok: left mid-transaction")

# A wrong password.
try:
    psycopg2.connect(wrong_dsn)
    expect(False, "wrong password refused")
except psycopg2.OperationalError as e:
    expect("password authentication failed" in str(e), "wrong password refused")
print("done")
