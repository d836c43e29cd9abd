// Package pgtest gives integration tests real PostgreSQL servers.
//
// A test binary shares one server (started on first use, stopped when the
// tests end) and gets a fresh database per test from it:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
//
//	func TestSomething(t *testing.T) {
//		uri := pgtest.NewDB(t) // dropped when the test ends
//		...
//	}
//
// The shared server trades durability for speed (fsync and synchronous
// commit off), so a test that kills or restarts a server takes a private
// one from NewCluster instead. TPCD_TEST_PG_BIN names the directory of the
// PostgreSQL binaries when they cannot be found on their own.
package pgtest
