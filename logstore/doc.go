// Package logstore stores and reads tpcd's event log as plain domain records, so the
// sqlc-generated types of package queries stay behind this one adapter.
//
// Every node of a cluster may share one log database; each row carries the name of
// the node that wrote it, and all reads are per node. A row holds the events of one
// append, in order (a node appends everything its engine produced meanwhile at once,
// so one row often carries the events of dozens of transactions), each with its
// transaction. Rows are appended and only ever changed by Compact, which removes the
// events of transactions that are over: it deletes rows left with nothing else and
// trims the others.
//
// Package logstore/memlog keeps the same contract in memory, for tests that need to
// decide when an append completes or whether it fails.
package logstore
