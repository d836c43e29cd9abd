// Package bench is tpcd's load generator (`tpcd bench`). It drives a
// running coordinator, or a local cluster its caller starts for it
// (Options.StartCluster), with many concurrent clients, each running
// explicit transactions of upserts spread over the participants, and
// measures committed and aborted transactions per second and commit
// latency.
//
// The raw baseline runs the same workload straight against the same
// PostgreSQL servers with the least two-phase-commit work there is — on
// every touched server BEGIN, the statements and PREPARE TRANSACTION, one
// decision row on the coordinator's log server, then COMMIT PREPARED — so
// that tpcd's cost is measured against the floor it cannot go below, not
// against an arbitrary number.
//
// Latencies go into an HDR histogram: its percentiles keep a fixed
// relative error from microseconds to minutes in fixed memory, whatever
// the number of samples, and it records in constant time without sorting.
//
// bench speaks to the coordinator only through the wire contract (package
// api); it never links the nodes, so a cluster in this process is started
// by the caller (cmd/tpcd runs localcluster).
package bench
