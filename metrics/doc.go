// Package metrics exposes a tpcd node to Prometheus and to health checks.
//
// The engine stays free of instrumentation: a Coordinator or Participant
// value here is a node.Observer, fed by the node's loop with the engine's
// inputs, outputs and durable events, from which it derives counters and
// histograms (transactions begun and decided, commit latency, vote and
// decision round trips, log appends, recovery). Gauges of state (in flight,
// in doubt) are read at scrape time from the snapshot the node takes on its
// loop goroutine every second, so a scrape never waits for the loop.
//
// Handler serves /metrics, /healthz (the process is alive) and /readyz (the
// node finished recovery and its databases answered its last check, which
// the node runs every second; a probe reads the result), plus an optional
// page at / (the coordinator's status page). It accepts the callers the
// node's RPC port accepts (tokens, mutual TLS), /healthz excepted, and
// bounds the work of /metrics and the page with a token bucket.
package metrics
