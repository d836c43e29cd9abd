// Package metrics exposes a tpcd node to Prometheus and to health checks.
//
// The engine stays free of instrumentation: a Coordinator or Participant
// value here is a node.Observer, fed by the node's loop with the engine's
// inputs, outputs and durable events, from which it derives counters and
// histograms (transactions begun and decided, commit latency, vote and
// decision round trips, log appends, recovery). Gauges of state (in flight,
// in doubt, participant reachability) are read at scrape time from a node
// snapshot, which the node takes on its loop goroutine.
//
// Handler serves /metrics, /healthz (the process is alive) and /readyz (the
// node finished recovery and its databases answer), plus an optional page
// at / (the coordinator's status page).
package metrics
