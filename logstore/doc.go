// Package logstore stores and reads tpcd's event log as plain domain records, so the
// sqlc-generated types of package queries stay behind this one adapter.
//
// Every node of a cluster may share one log database; each record carries the name of
// the node that wrote it, and all reads are per node. Records are append-only: the
// only removal is DeleteTxs, which compacts the events of transactions that are over.
package logstore
