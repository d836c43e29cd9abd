// Package chaos is tpcd's chaos harness: it runs a real cluster — a
// coordinator and N participants as tpcd processes, each on private
// PostgreSQL servers — under a concurrent client workload, injects faults
// at random for a while (SIGKILL and restart of nodes and of PostgreSQL
// servers, the coordinator's own PostgreSQL killed for it to heal, the
// coordinator replaced by a fresh one with an empty log, paused processes,
// cut, refused, black-holed, stalled and delayed links), then restores
// everything, waits until every transaction has ended and checks atomicity
// transaction by transaction: committed on every node it wrote to or on
// none, everything a client was told committed present, nothing a client
// was told aborted present, no prepared transaction left. A transaction is
// named by the coordinator incarnation that issued it and its id (TxKey),
// since a replaced coordinator issues the same ids again.
//
// Node-to-node traffic runs through an in-process TCP proxy per link (see
// Link), which is how links are faulted; clients talk to the coordinator
// directly. `tpcd chaos` runs it from the command line; docs/CHAOS.md
// describes the fault kinds, the checks and the figures of a long run.
package chaos
