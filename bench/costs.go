package bench

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Costs are what one committed transaction cost, whatever the machine's
// load: rates and latencies swing with what else runs, these much less.
type Costs struct {
	// ProcessCPUMsPerTx is this process's CPU time (user + system) per
	// committed transaction. With a cluster Run started, the nodes run in
	// this process, so for tpcd it is all of tpcd's CPU plus the clients';
	// for raw, only the clients'.
	ProcessCPUMsPerTx float64 `json:"process_cpu_ms_per_tx"`
	// MachineCPUMsPerTx is the CPU time of every process involved per
	// committed transaction: this process's (as above) plus that of the
	// cluster's nodes that run here as processes of their own and of the
	// PostgreSQL servers involved (procScope), read from /proc at the
	// start and the end of the measurement (see cpuBetween for the
	// processes that start or end in between).
	// PostgresCPUMsPerTx and TPCDProcessesCPUMsPerTx are its parts other
	// than this process. All three are 0 where /proc cannot be read.
	MachineCPUMsPerTx       float64 `json:"machine_cpu_ms_per_tx"`
	PostgresCPUMsPerTx      float64 `json:"postgres_cpu_ms_per_tx"`
	TPCDProcessesCPUMsPerTx float64 `json:"tpcd_processes_cpu_ms_per_tx"`
	// PostgresProcesses and TPCDProcesses count the processes of each kind
	// the machine figure includes: those seen at the start or the end of
	// the measurement.
	PostgresProcesses int `json:"postgres_processes"`
	TPCDProcesses     int `json:"tpcd_processes"`
	// Server-side work per committed transaction, summed over the
	// PostgreSQL servers (each counted once): WAL flushes to disk
	// (pg_stat_wal.wal_sync, the fsyncs), WAL bytes and committed
	// PostgreSQL transactions (pg_stat_database.xact_commit, all
	// databases). Zero when the servers' URIs are unknown.
	WALSyncsPerTx  float64 `json:"wal_syncs_per_tx"`
	WALBytesPerTx  float64 `json:"wal_bytes_per_tx"`
	PGCommitsPerTx float64 `json:"pg_commits_per_tx"`
	// ContextSwitchesPerTx are the context switches per committed
	// transaction of every process MachineCPUMsPerTx counts, voluntary
	// (a thread waited: for a message, a lock, the disk) and involuntary
	// (preempted): each hop between processes wakes one, so they count
	// hops and waits where CPU counts work. A server process that ended
	// during the measurement is left out. 0 where /proc cannot be read.
	ContextSwitchesPerTx float64 `json:"context_switches_per_tx"`
}

// costMeter takes the counters before and after a measurement.
type costMeter struct {
	uris     []string // one per server
	scope    procScope
	cpu      time.Duration
	switches uint64 // this process's
	procs    procSnapshot
	servers  []serverCounters
	// err is why the servers' statistics are missing, procErr why the
	// other processes' CPU is.
	err, procErr error
}

type serverCounters struct {
	walSync, walBytes, commits int64
}

// newCostMeter reads the statistics of the servers of uris (one URI per
// server, see oneURIPerServer); scope chooses the processes whose CPU
// counts besides this one.
func newCostMeter(uris []string, scope procScope) *costMeter {
	return &costMeter{uris: uris, scope: scope}
}

// oneURIPerServer keeps the first URI of each server: several databases of
// one server share its WAL, statistics and processes.
func oneURIPerServer(uris []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, u := range uris {
		cfg, err := pgx.ParseConfig(u)
		if err != nil {
			continue
		}
		key := net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))
		if !seen[key] {
			seen[key] = true
			out = append(out, u)
		}
	}
	return out
}

// processUsage is this process's CPU time and context switches, every
// thread's.
func processUsage() (time.Duration, uint64) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), uint64(ru.Nvcsw + ru.Nivcsw)
}

func (m *costMeter) read(ctx context.Context) []serverCounters {
	out := make([]serverCounters, len(m.uris))
	for i, u := range m.uris {
		c, err := readCounters(ctx, u)
		if err != nil {
			m.err = err
			return nil
		}
		out[i] = c
	}
	return out
}

func readCounters(ctx context.Context, uri string) (serverCounters, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, uri)
	if err != nil {
		return serverCounters{}, fmt.Errorf("read server statistics: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var c serverCounters
	err = conn.QueryRow(ctx, `SELECT w.wal_sync, w.wal_bytes::bigint, (SELECT sum(xact_commit)::bigint FROM pg_stat_database)
		FROM pg_stat_wal w`).Scan(&c.walSync, &c.walBytes, &c.commits)
	if err != nil {
		return c, fmt.Errorf("read server statistics: %w", err)
	}
	return c, nil
}

// start takes the counters as the measurement begins. The servers'
// statistics come first: reading them starts a backend on each server,
// whose CPU is the meter's, not the workload's.
func (m *costMeter) start(ctx context.Context) {
	m.servers = m.read(ctx)
	m.cpu, m.switches = processUsage()
	m.procs = m.snapshot()
}

func (m *costMeter) snapshot() procSnapshot {
	snap, err := m.scope.snapshot()
	if err != nil {
		m.procErr = err
	}
	return snap
}

// stop computes the costs per committed transaction. CPU times are taken
// at once; server statistics reach the shared counters a moment after a
// transaction ends, so it waits that moment out before reading them.
func (m *costMeter) stop(ctx context.Context, committed int64) *Costs {
	cpu, switches := processUsage()
	cpu, switches = cpu-m.cpu, switches-m.switches
	var procs procSnapshot
	if m.procs != nil {
		procs = m.snapshot()
	}
	if committed == 0 {
		return nil
	}
	n := float64(committed)
	perTx := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / n }
	c := &Costs{ProcessCPUMsPerTx: perTx(cpu)}
	if procs != nil {
		others := cpuBetween(m.procs, procs, clockTicks())
		c.PostgresCPUMsPerTx, c.TPCDProcessesCPUMsPerTx = perTx(others.postgres), perTx(others.tpcd)
		c.MachineCPUMsPerTx = perTx(cpu + others.postgres + others.tpcd)
		c.PostgresProcesses, c.TPCDProcesses = others.postgresProcs, others.tpcdProcs
		c.ContextSwitchesPerTx = float64(switches+others.switches) / n
	}
	if len(m.uris) == 0 || m.servers == nil {
		return c
	}
	time.Sleep(1500 * time.Millisecond)
	after := m.read(ctx)
	if after == nil {
		return c
	}
	var d serverCounters
	for i := range after {
		d.walSync += after[i].walSync - m.servers[i].walSync
		d.walBytes += after[i].walBytes - m.servers[i].walBytes
		d.commits += after[i].commits - m.servers[i].commits
	}
	c.WALSyncsPerTx = float64(d.walSync) / n
	c.WALBytesPerTx = float64(d.walBytes) / n
	c.PGCommitsPerTx = float64(d.commits) / n
	return c
}
