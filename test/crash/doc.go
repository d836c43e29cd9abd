// Package crash holds the crash-matrix test: a coordinator and three
// participants run as real tpcd processes on real PostgreSQL servers, one
// of them is killed at a protocol step (package failpoint) or one of the
// PostgreSQL servers is killed under load, and after restarts the test
// proves that every transaction ended the same way everywhere, as the
// coordinator decided and as its client was told, and that no prepared
// transaction is left behind. docs/FAILPOINTS.md describes the matrix.
package crash
