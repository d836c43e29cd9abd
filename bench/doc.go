// Package bench is tpcd's load generator (`tpcd bench`). It drives a
// running coordinator, or a local cluster its caller starts for it
// (Options.StartCluster), with many concurrent clients, each running
// explicit transactions of upserts spread over the participants, and
// measures committed and aborted transactions per second and commit
// latency.
//
// The baselines run the same workload straight against the same
// PostgreSQL servers with the least work there is, so that tpcd's cost is
// measured against a floor, not against an arbitrary number: raw
// two-phase commit (on every touched server BEGIN, the statements and
// PREPARE TRANSACTION, a decision row on the coordinator's log server,
// then COMMIT PREPARED), with a forced decision row each or with the
// decision rows of concurrent transactions group-committed, and a plain
// local transaction on one server (BEGIN, statements, COMMIT).
//
// Costs per committed transaction include the CPU of every process
// involved on the machine, the PostgreSQL servers' and separately run
// nodes' too, read from /proc (machinecpu.go).
//
// Latencies go into an HDR histogram: its percentiles keep a fixed
// relative error from microseconds to minutes in fixed memory, whatever
// the number of samples, and it records in constant time without sorting.
//
// bench speaks to the coordinator only through the wire contract (package
// api); it never links the nodes, so a cluster in this process is started
// by the caller (cmd/tpcd runs localcluster).
package bench
