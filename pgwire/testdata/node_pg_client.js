// Drives tpcd's PostgreSQL front door with node-postgres (the pg package),
// as a Node.js application would. Usage:
//   node node_pg_client.js HOST PORT USER PASSWORD KEY_ON_0 KEY_ON_1 KEY_LEFT KEY_NAMED_0 KEY_NAMED_1
// Prints one line per check; exits non-zero at the first surprise. The Go
// test (clients_test.go) then checks the rows on the data servers.
'use strict';

const { Client } = require('pg');

const [host, port, user, password, k0, k1, kLeft, kn0, kn1] = process.argv.slice(2);
const config = (pw) => ({ host, port: Number(port), user, password: pw, database: 'tpcd', connectionTimeoutMillis: 60000 });

function expect(cond, what) {
  if (!cond) {
    console.log('FAILED: ' + what);
    process.exit(1);
  }
  console.log('ok: ' + what);
}

// refused runs a query that must fail and returns its error.
async function refused(client, query, values, what) {
  try {
    await client.query(query, values);
  } catch (e) {
    return e;
  }
  expect(false, what);
}

async function main() {
  // A transaction across both participants, statements with parameters
  // (the extended protocol, unnamed statements).
  let c = new Client(config(password));
  await c.connect();
  await c.query('BEGIN');
  let r = await c.query('INSERT INTO kv (k, v) VALUES ($1, $2)', [Number(k0), 'node-pg']);
  expect(r.rowCount === 1, 'insert on participant 0');
  await c.query('INSERT INTO kv (k, v) VALUES ($1, $2)', [Number(k1), 'node-pg']);
  await c.query('COMMIT');
  r = await c.query('SELECT k, v FROM kv WHERE k = $1', [Number(k1)]);
  expect(r.rows.length === 1 && r.rows[0].k === Number(k1) && r.rows[0].v === 'node-pg',
    'read back from participant 1, an int column as a number');
  expect(r.fields.map((f) => f.name).join(',') === 'k,v', 'the columns described by name');

  // A named prepared statement, parsed once and run again in another
  // transaction, on each participant.
  const named = { name: 'put-kv', text: 'INSERT INTO kv (k, v) VALUES ($1, $2)' };
  await c.query('BEGIN');
  await c.query({ ...named, values: [Number(kn0), 'named'] });
  await c.query({ ...named, values: [Number(kn1), 'named'] });
  await c.query('COMMIT');
  r = await c.query({ name: 'get-kv', text: 'SELECT v FROM kv WHERE k = $1', values: [Number(kn0)] });
  expect(r.rows.length === 1 && r.rows[0].v === 'named', 'a named statement ran on both participants');

  // A failing statement: the participant's SQLSTATE and detail, then the
  // block is failed until ROLLBACK.
  await c.query('BEGIN');
  let e = await refused(c, 'INSERT INTO kv (k, v) VALUES ($1, $2)', [Number(k0), 'dup'], 'duplicate refused');
  expect(e.code === '23505' && typeof e.detail === 'string' && e.detail.length > 0, 'duplicate refused with 23505 and a detail');
  e = await refused(c, 'SELECT 1', [], 'failed block refuses statements');
  expect(e.code === '25P02', 'failed block answers 25P02');
  r = await c.query('COMMIT');
  expect(r.command === 'ROLLBACK', 'COMMIT of a failed block answers ROLLBACK');

  // A routing error names the choices; an unsupported statement is 0A000.
  e = await refused(c, "UPDATE kv SET v = 'x'", [], 'unroutable update refused');
  expect(e.code === '22023' && /tpcd:node=N/.test(e.hint || ''), 'unroutable update refused with the choices');
  await c.query('BEGIN');
  e = await refused(c, 'SAVEPOINT s', [], 'savepoint refused');
  expect(e.code === '0A000', 'savepoint refused with 0A000');
  await c.query('ROLLBACK');
  await c.end();

  // A client that leaves mid-transaction: its row must not stay.
  c = new Client(config(password));
  await c.connect();
  await c.query('BEGIN');
  await c.query('INSERT INTO kv (k, v) VALUES ($1, $2)', [Number(kLeft), 'left behind?']);
  await c.end();
  console.log('ok: left mid-transaction');

  // A wrong password.
  c = new Client(config('wrong'));
  try {
    await c.connect();
    expect(false, 'wrong password refused');
  } catch (err) {
    expect(/password authentication failed/.test(err.message), 'wrong password refused');
  }
  console.log('done');
}

main().catch((e) => {
  console.log('FAILED: ' + (e && e.stack ? e.stack : e));
  process.exit(1);
});
