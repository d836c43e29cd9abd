// Package logstore stores and reads tpcd's event log as plain domain records, so the
// sqlc-generated types of package queries stay behind this one adapter.
//
// Every node of a cluster may share one log database; each record carries the name of
// the node that wrote it, and all reads are per node. Records are append-only: the
// only removal is DeleteTxs, which compacts the events of transactions that are over.
//
// Package logstore/memlog keeps the same contract in memory, for tests that need to
// decide when an append completes or whether it fails.
package logstore
