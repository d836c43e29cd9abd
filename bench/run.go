package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"slices"
	"strings"
	"time"
)

// Config is what a report was measured with.
type Config struct {
	// Coordinator is the address driven; StartedCluster says whether Run
	// started it (in this process) or it was running already.
	Coordinator     string  `json:"coordinator"`
	StartedCluster  bool    `json:"started_cluster"`
	Participants    int     `json:"participants"`
	Form            string  `json:"form"`
	Transport       string  `json:"transport"`
	Concurrency     int     `json:"concurrency"`
	Connections     int     `json:"connections"`
	Statements      int     `json:"statements"`
	MaxConns        int     `json:"max_conns,omitempty"`
	LazyPrepared    bool    `json:"lazy_prepared,omitempty"`
	DecisionRetryMS float64 `json:"decision_retry_ms,omitempty"`
	HotFraction     float64 `json:"hot_fraction"`
	HotKeys         int     `json:"hot_keys"`
	DurationSec     float64 `json:"duration_sec,omitempty"`
	Transactions    int     `json:"transactions,omitempty"`
	WarmupSec       float64 `json:"warmup_sec"`
	// Baseline names the baselines measured, comma-separated ("none":
	// tpcd alone), and Baselines lists them.
	Baseline   string   `json:"baseline"`
	Baselines  []string `json:"baselines,omitempty"`
	Rounds     int      `json:"rounds"`
	GOMAXPROCS int      `json:"gomaxprocs"`
	// Rate and Schedule: transactions were due at this rate per second
	// on this schedule (0: as fast as the clients went); LatencyLimitMS
	// is Options.LatencyLimit.
	Rate           float64 `json:"rate,omitempty"`
	Schedule       string  `json:"schedule,omitempty"`
	LatencyLimitMS float64 `json:"latency_limit_ms,omitempty"`
}

// Ratio compares tpcd with a baseline: tpcd's figure divided by the
// baseline's.
type Ratio struct {
	Throughput float64 `json:"throughput"`
	P50        float64 `json:"p50"`
	P99        float64 `json:"p99"`
	// MachineCPU compares the CPU of every process involved per committed
	// transaction (Costs.MachineCPUMsPerTx); 0 where it was not read.
	MachineCPU float64 `json:"machine_cpu,omitempty"`
}

// Memory is the resident memory seen during the measurements, in MiB.
type Memory struct {
	// ProcessPeakMB is this process's peak (VmHWM) over its whole life;
	// when Run started the cluster, that includes every node.
	ProcessPeakMB float64 `json:"process_peak_mb"`
	// WatchedPID and WatchedPeakMB: the peak of Options.WatchPID, sampled
	// every second during the measurements.
	WatchedPID    int     `json:"watched_pid,omitempty"`
	WatchedPeakMB float64 `json:"watched_peak_mb,omitempty"`
}

// Machine is what else was going on: figures taken on a busy machine are
// not comparable with figures taken on an idle one.
type Machine struct {
	CPUs int `json:"cpus"`
	// LoadBefore and LoadAfter are the one-minute load averages when the
	// measurements began and ended (0 where /proc/loadavg is missing).
	LoadBefore float64 `json:"load_before"`
	LoadAfter  float64 `json:"load_after"`
}

// Report is the outcome of Run.
type Report struct {
	Config Config `json:"config"`
	// Round holds the figures: when there was more than one round, the
	// median round's (see medianRound).
	Round
	// Rounds holds every round when there was more than one.
	Rounds []Round `json:"rounds,omitempty"`
	// RawLeftoverPrepared counts the two-phase baselines' prepared
	// transactions found on the data servers after they ran; anything but
	// 0 is a bug.
	RawLeftoverPrepared int     `json:"raw_leftover_prepared"`
	Memory              Memory  `json:"memory"`
	Machine             Machine `json:"machine"`
}

// Round is one measurement of tpcd and, if asked, of the baselines right
// after it.
type Round struct {
	TPCD *Result `json:"tpcd"`
	// Raw and Ratio are the raw baseline's result (one forced decision
	// each) and tpcd's figures against it, where reports had them before
	// there was more than one baseline; Baselines has Raw too.
	Raw   *Result `json:"raw,omitempty"`
	Ratio *Ratio  `json:"ratio,omitempty"`
	// Baselines are the baselines' results in the order measured
	// (Result.Mode names each), and Ratios tpcd's figures against each of
	// them by mode.
	Baselines []*Result         `json:"baselines,omitempty"`
	Ratios    map[string]*Ratio `json:"ratios,omitempty"`
}

// addBaseline files a baseline's result and tpcd's ratio against it.
func (r *Round) addBaseline(res *Result) {
	q := ratio(r.TPCD, res)
	r.Baselines = append(r.Baselines, res)
	if r.Ratios == nil {
		r.Ratios = map[string]*Ratio{}
	}
	r.Ratios[res.Mode] = q
	if res.Mode == BaselineRaw {
		r.Raw, r.Ratio = res, q
	}
}

// leadRatio is tpcd's ratio against the first baseline measured; nil
// without one.
func (r Round) leadRatio() *Ratio {
	if len(r.Baselines) == 0 {
		return nil
	}
	return r.Ratios[r.Baselines[0].Mode]
}

// medianRound picks the round that stands for all: the median by tpcd's
// throughput against the first baseline, or by tpcd's throughput without
// a baseline; of an even number, the lower of the middle two.
func medianRound(rounds []Round) Round {
	// Ratios and rates do not sort together: when some rounds have a ratio
	// (a round cut short by a cancel may lack its baseline), only those
	// take part.
	sorted := slices.DeleteFunc(slices.Clone(rounds), func(r Round) bool { return r.leadRatio() == nil })
	key := func(r Round) float64 { return r.leadRatio().Throughput }
	if len(sorted) == 0 {
		sorted = slices.Clone(rounds)
		key = func(r Round) float64 { return r.TPCD.CommittedPerSec }
	}
	slices.SortStableFunc(sorted, func(a, b Round) int { return cmp.Compare(key(a), key(b)) })
	return sorted[(len(sorted)-1)/2]
}

// Run measures tpcd, and the baselines asked for, and reports them. When
// ctx ends it stops early and returns ctx's error with what it measured.
func Run(ctx context.Context, opts Options) (*Report, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts.fill()
	log := opts.Logger

	rep := &Report{}
	if opts.Coordinator == "" {
		log.Info("starting a local cluster", "participants", opts.Participants, "max_conns", opts.MaxConns)
		cl, err := opts.StartCluster(ctx, ClusterSpec{
			Participants: opts.Participants, PGBin: opts.PGBin, MaxConns: opts.MaxConns,
			LazyPrepared: opts.LazyPrepared, DecisionRetry: opts.DecisionRetry, Protocol: opts.Protocol, Logger: log,
		})
		if err != nil {
			return nil, fmt.Errorf("start a local cluster: %w", err)
		}
		defer func() {
			if err := cl.Stop(); err != nil {
				log.Warn("stopping the local cluster", "err", err)
			}
		}()
		opts.Coordinator, opts.LogDB, opts.DataDBs = cl.Coordinator, cl.LogDB, cl.DataDBs
		rep.Config.StartedCluster = true
	}

	tp := newTPCDDriver(append([]string{opts.Coordinator}, opts.Standbys...), opts.Connections, opts.CallTimeout, opts.Form, opts.Transport)
	if !opts.NoKeys {
		tp.keyPrefix = fmt.Sprintf("bench-%x-%d-", time.Now().UnixNano(), os.Getpid())
	}
	defer tp.close()
	setupCtx, cancel := context.WithTimeout(ctx, opts.CallTimeout)
	defer cancel()
	participants, err := tp.participants(setupCtx)
	if err != nil {
		return nil, err
	}
	n := len(participants)
	opts.Participants = n
	if tp.needsParticipants() {
		tp.dialParticipants(participants, opts.Transport)
	}
	if len(opts.Baselines) > 0 && len(opts.DataDBs) != n {
		return nil, fmt.Errorf("the coordinator has %d participants but %d --data-db were given", n, len(opts.DataDBs))
	}
	if err := tp.createTable(setupCtx, n); err != nil {
		return nil, err
	}

	rep.Config = Config{
		Coordinator: opts.Coordinator, StartedCluster: rep.Config.StartedCluster,
		MaxConns: opts.MaxConns, LazyPrepared: opts.LazyPrepared, DecisionRetryMS: float64(opts.DecisionRetry) / float64(time.Millisecond), Participants: n, Form: opts.Form, Transport: opts.Transport, Concurrency: opts.Concurrency, Connections: opts.Connections, Statements: opts.Statements,
		HotFraction: opts.HotFraction, HotKeys: opts.HotKeys, Transactions: opts.Transactions,
		WarmupSec: opts.Warmup.Seconds(), Baseline: BaselineNone, Baselines: opts.Baselines, Rounds: opts.Rounds, GOMAXPROCS: runtime.GOMAXPROCS(0),
	}
	if len(opts.Baselines) > 0 {
		rep.Config.Baseline = strings.Join(opts.Baselines, ",")
	}
	if !rep.Config.StartedCluster {
		rep.Config.MaxConns = 0 // the running cluster's pools are its own
	}
	if opts.Transactions == 0 {
		rep.Config.DurationSec = opts.Duration.Seconds()
	}
	if opts.Rate > 0 {
		rep.Config.Rate, rep.Config.Schedule = opts.Rate, opts.Schedule
	}
	rep.Config.LatencyLimitMS = float64(opts.LatencyLimit) / float64(time.Millisecond)
	keys := newKeySource(opts.HotFraction, opts.HotKeys)
	rep.Machine = Machine{CPUs: runtime.NumCPU(), LoadBefore: loadAverage()}
	defer func() { rep.Machine.LoadAfter = loadAverage() }()

	var servers []string
	if opts.LogDB != "" {
		servers = append(servers, opts.LogDB)
	}
	servers = oneURIPerServer(append(servers, opts.DataDBs...))
	scope := procScope{
		self: os.Getpid(),
		// Every coordinator given that serves (a standby's port is
		// closed): several serve at once with --slots.
		nodes:   findNodes(slices.Concat([]string{opts.Coordinator}, opts.Standbys, participants)),
		servers: findServers(ctx, servers),
	}

	var watched []float64
	measure := func(l *load) *Result {
		meter := newCostMeter(servers, scope)
		var s *rssSampler
		prev := l.onMeasure
		l.onMeasure = func() {
			meter.start(ctx)
			if opts.WatchPID > 0 {
				s = startRSSSampler(opts.WatchPID)
			}
			if prev != nil {
				prev()
			}
		}
		res := l.run(ctx)
		if s != nil {
			watched = append(watched, s.stop()[opts.WatchPID])
		}
		res.Costs = meter.stop(context.WithoutCancel(ctx), res.Committed)
		if meter.err != nil {
			log.Warn("server statistics not read; costs per transaction are incomplete", "err", meter.err)
		}
		if meter.procErr != nil {
			log.Warn("other processes' CPU not read; the machine's CPU per transaction is missing", "err", meter.procErr)
		}
		return res
	}

	var raw *rawDriver
	if len(opts.Baselines) > 0 {
		logDB := ""
		if hasTwoPhaseBaseline(opts.Baselines) {
			logDB = opts.LogDB
		}
		raw = newRawDriver(opts.DataDBs, logDB, keys.nonce, opts.LockTimeout, opts.CallTimeout, opts.Form == FormSingle || opts.Form == FormPlain,
			slices.Contains(opts.Baselines, BaselineRawGrouped), opts.Concurrency)
		defer raw.close()
		rawCtx, cancel := context.WithTimeout(ctx, opts.CallTimeout)
		defer cancel()
		if err := raw.setup(rawCtx); err != nil {
			return rep, err
		}
		if err := raw.connect(rawCtx, opts.Concurrency); err != nil {
			return rep, fmt.Errorf("baselines: %w", err)
		}
	}

	var rounds []Round
	for r := range opts.Rounds {
		if ctx.Err() != nil {
			break
		}
		// tpcd first, with the profiles if asked (first round only).
		var round Round
		tl := &load{mode: "tpcd", opts: &opts, keys: keys, progress: opts.Progress, oneNode: opts.Form == FormPlain}
		for i := range opts.Concurrency {
			tl.clients = append(tl.clients, tp.client(i))
		}
		var prof *profiler
		if r == 0 {
			var err error
			if prof, err = newProfiler(opts.CPUProfile, opts.MemProfile, opts.Trace); err != nil {
				return nil, err
			}
			tl.onMeasure, tl.onEnd = prof.start, prof.stop
		}
		log.Info("measuring tpcd", "round", r+1, "clients", opts.Concurrency, "connections", opts.Connections)
		round.TPCD = measure(tl)
		if prof != nil && prof.err != nil {
			rep.TPCD = round.TPCD
			return rep, prof.err
		}

		for _, b := range opts.Baselines {
			if ctx.Err() != nil {
				break
			}
			bl := &load{mode: b, opts: &opts, keys: keys, progress: opts.Progress, oneNode: b == BaselineLocal}
			for i := range opts.Concurrency {
				bl.clients = append(bl.clients, raw.client(i, b))
			}
			log.Info("measuring a baseline", "baseline", b, "round", r+1, "clients", opts.Concurrency)
			round.addBaseline(measure(bl))
		}
		rounds = append(rounds, round)
	}
	if len(rounds) > 0 {
		rep.Round = medianRound(rounds)
	}
	if len(rounds) > 1 {
		rep.Rounds = rounds
	}
	if raw != nil && hasTwoPhaseBaseline(opts.Baselines) {
		left, err := raw.leftoverPrepared(context.WithoutCancel(ctx))
		if err != nil {
			return rep, fmt.Errorf("raw baselines: check for prepared transactions left behind: %w", err)
		}
		rep.RawLeftoverPrepared = left
	}

	rep.Memory.ProcessPeakMB = selfPeakRSS()
	if opts.WatchPID > 0 {
		rep.Memory.WatchedPID = opts.WatchPID
		for _, w := range watched {
			rep.Memory.WatchedPeakMB = max(rep.Memory.WatchedPeakMB, w)
		}
	}
	return rep, ctx.Err()
}

func ratio(t, r *Result) *Ratio {
	div := func(a, b float64) float64 {
		if b == 0 {
			return 0
		}
		return a / b
	}
	q := &Ratio{
		Throughput: div(t.CommittedPerSec, r.CommittedPerSec),
		P50:        div(t.Latency.P50, r.Latency.P50),
		P99:        div(t.Latency.P99, r.Latency.P99),
	}
	if t.Costs != nil && r.Costs != nil {
		q.MachineCPU = div(t.Costs.MachineCPUMsPerTx, r.Costs.MachineCPUMsPerTx)
	}
	return q
}

// profiler writes a CPU profile and an execution trace of the measurement
// and an allocation profile at its end.
type profiler struct {
	memPath    string
	cpu, trace *os.File
	err        error
}

func newProfiler(cpuPath, memPath, tracePath string) (*profiler, error) {
	p := &profiler{memPath: memPath}
	if cpuPath != "" {
		f, err := os.Create(cpuPath)
		if err != nil {
			return nil, fmt.Errorf("cpu profile: %w", err)
		}
		p.cpu = f
	}
	if tracePath != "" {
		f, err := os.Create(tracePath)
		if err != nil {
			if p.cpu != nil {
				p.cpu.Close()
				os.Remove(cpuPath)
			}
			return nil, fmt.Errorf("execution trace: %w", err)
		}
		p.trace = f
	}
	return p, nil
}

func (p *profiler) start() {
	if p.cpu != nil {
		if err := pprof.StartCPUProfile(p.cpu); err != nil {
			p.err = fmt.Errorf("cpu profile: %w", err)
			p.cpu.Close()
			p.cpu = nil
		}
	}
	if p.trace != nil {
		if err := trace.Start(p.trace); err != nil {
			p.err = errors.Join(p.err, fmt.Errorf("execution trace: %w", err))
			p.trace.Close()
			p.trace = nil
		}
	}
}

func (p *profiler) stop() {
	if p.cpu != nil {
		pprof.StopCPUProfile()
		p.err = errors.Join(p.err, p.cpu.Close())
	}
	if p.trace != nil {
		trace.Stop()
		p.err = errors.Join(p.err, p.trace.Close())
	}
	if p.memPath != "" {
		f, err := os.Create(p.memPath)
		if err != nil {
			p.err = errors.Join(p.err, fmt.Errorf("allocation profile: %w", err))
			return
		}
		defer f.Close()
		runtime.GC()
		if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
			p.err = errors.Join(p.err, fmt.Errorf("allocation profile: %w", err))
		}
	}
}
