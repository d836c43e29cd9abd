package metrics

import (
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tpcd/tpcd/node"
)

var (
	inFlightDesc = prometheus.NewDesc("tpcd_transactions_in_flight",
		"Transactions the coordinator holds in memory, by state.", []string{"state"}, nil)
	inDoubtDesc = prometheus.NewDesc("tpcd_transactions_in_doubt",
		"Transactions whose participants may be prepared and waiting for the outcome.", nil, nil)
	reachableDesc = prometheus.NewDesc("tpcd_participant_reachable",
		"1 if the coordinator's last contact with the participant succeeded.", []string{"node", "address"}, nil)
	lastSeenDesc = prometheus.NewDesc("tpcd_participant_last_seen_seconds",
		"Seconds since the last successful contact with the participant (-1: never).", []string{"node", "address"}, nil)
	openDesc = prometheus.NewDesc("tpcd_participant_open_transactions",
		"Transactions with unprepared work on this participant.", nil, nil)
	snapshotErrDesc = prometheus.NewDesc("tpcd_snapshot_errors_total",
		"Scrapes that found no recent snapshot of the node's state (the node's loop stopped answering).", nil, nil)
)

// WatchCoordinator registers the coordinator's state gauges with reg: read
// at every scrape from the snapshot the coordinator refreshes every second
// (LatestSnapshot), so that scrapes never wait for its loop; and its log
// pool's statistics. adopted, when not nil, lists the coordinators of the
// slots this one adopted (their transactions are the node's too, and an
// alert on transactions in doubt must see them): the transaction gauges
// count theirs with c's.
func WatchCoordinator(reg prometheus.Registerer, c *node.Coordinator, logger *slog.Logger, adopted func() []*node.Coordinator) {
	watchPools(reg, c.Databases())
	snapshot := c.LatestSnapshot
	if adopted != nil {
		snapshot = func() (node.CoordinatorSnapshot, error) { return withAdopted(c, adopted()) }
	}
	read := snapshotReader(logger, "coordinator", snapshot)
	reg.MustRegister(prometheus.CollectorFunc(func(ch chan<- prometheus.Metric) {
		// Reachability is kept apart from the loop: read it now rather
		// than as old as the snapshot.
		for _, p := range c.Nodes() {
			up := 0.0
			if p.Reachable {
				up = 1
			}
			id := strconv.Itoa(int(p.Node))
			ch <- prometheus.MustNewConstMetric(reachableDesc, prometheus.GaugeValue, up, id, p.Address)
			seen := -1.0
			if p.LastSeenMillis >= 0 {
				seen = float64(p.LastSeenMillis) / 1000
			}
			ch <- prometheus.MustNewConstMetric(lastSeenDesc, prometheus.GaugeValue, seen, id, p.Address)
		}
		s, ok := read(ch)
		if !ok {
			return
		}
		states := map[string]int{"active": 0, "preparing": 0, "committing": 0, "aborting": 0}
		for _, tx := range s.InFlight {
			states[tx.State]++
		}
		for st, n := range states {
			ch <- prometheus.MustNewConstMetric(inFlightDesc, prometheus.GaugeValue, float64(n), st)
		}
		ch <- prometheus.MustNewConstMetric(inDoubtDesc, prometheus.GaugeValue, float64(len(s.InDoubt)))
	}))
}

// withAdopted is c's latest snapshot with the transactions of the
// coordinators of the slots it adopted added. It fails when any of them
// has none: a gauge that left out a slot whose loop stopped answering
// would show fewer transactions in doubt just when they matter, so the
// scrape goes without the gauges and counts the failure, as for c's own.
func withAdopted(c *node.Coordinator, adopted []*node.Coordinator) (node.CoordinatorSnapshot, error) {
	s, err := c.LatestSnapshot()
	if err != nil {
		return s, err
	}
	for _, a := range adopted {
		as, err := a.LatestSnapshot()
		if err != nil {
			return s, fmt.Errorf("an adopted slot's coordinator: %w", err)
		}
		// Clipped: the snapshots' slices are shared with other readers.
		s.InFlight = append(slices.Clip(s.InFlight), as.InFlight...)
		s.InDoubt = append(slices.Clip(s.InDoubt), as.InDoubt...)
	}
	return s, nil
}

// WatchParticipant registers a participant's state gauges with reg, read
// from its LatestSnapshot, and its pools' statistics.
func WatchParticipant(reg prometheus.Registerer, p *node.Participant, logger *slog.Logger) {
	watchPools(reg, p.Databases())
	read := snapshotReader(logger, "participant", p.LatestSnapshot)
	reg.MustRegister(prometheus.CollectorFunc(func(ch chan<- prometheus.Metric) {
		s, ok := read(ch)
		if !ok {
			return
		}
		ch <- prometheus.MustNewConstMetric(inDoubtDesc, prometheus.GaugeValue, float64(s.InDoubt))
		ch <- prometheus.MustNewConstMetric(openDesc, prometheus.GaugeValue, float64(s.Open))
	}))
}

// snapshotReader returns what a scrape calls to read a node's snapshot: it
// reports on ch how many scrapes so far found none (logging each), and
// whether this one did.
func snapshotReader[S any](logger *slog.Logger, role string, snapshot func() (S, error)) func(ch chan<- prometheus.Metric) (S, bool) {
	var failures atomic.Uint64 // scrapes may run concurrently
	return func(ch chan<- prometheus.Metric) (S, bool) {
		s, err := snapshot()
		if err != nil {
			failures.Add(1)
			logger.Warn("metrics: "+role+" snapshot unavailable", "err", err)
		}
		ch <- prometheus.MustNewConstMetric(snapshotErrDesc, prometheus.CounterValue, float64(failures.Load()))
		return s, err == nil
	}
}
