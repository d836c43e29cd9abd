// Package testcluster starts a tpcd coordinator and participants inside a
// test, on loopback ports, each with its own log and data databases on the
// shared test PostgreSQL (internal/pgtest: the test package's TestMain must
// call pgtest.Main). Options can be adjusted per node, for tests of
// transports, limits and observers.
package testcluster
