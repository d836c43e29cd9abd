// Package testcluster starts a tpcd coordinator and participants inside a
// test, on loopback ports, each with its own log and data databases on the
// shared test PostgreSQL (internal/pgtest: the test package's TestMain must
// call pgtest.Main). Options can be adjusted per node, for tests of
// transports, limits and observers, and a node can be stopped and started
// again on its address and databases, for tests of restarts. Every test
// package that runs nodes in its own process uses it; tests of package
// node itself do so from package node_test, since this package imports
// node.
package testcluster
