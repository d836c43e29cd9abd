package chaos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Options configure a chaos run. Zero values select the defaults.
type Options struct {
	// Binary is the tpcd executable the nodes run (the CLI passes its own,
	// os.Executable). Required.
	Binary string
	// Duration is how long faults are injected. Default 60s.
	Duration time.Duration
	// Participants is the number of participants. Default 3.
	Participants int
	// Clients is the number of concurrent clients. Default 8.
	Clients int
	// Seed drives every random choice of the harness (faults, their
	// targets and lengths, the workload). 0 picks one from the clock; the
	// report prints it. Timing still differs between runs with one seed.
	Seed uint64
	// PGBin holds initdb and postgres; empty: PATH, then
	// /usr/lib/postgresql/*/bin.
	PGBin string
	// Keep, if set, is a new (or empty) directory where the servers' data
	// and the node logs are kept after the run. Otherwise they live in a
	// temporary directory that is removed.
	Keep string
	// QuiesceTimeout bounds the wait, after the faults, for the cluster to
	// serve again and end every transaction. Default 3m.
	QuiesceTimeout time.Duration
	// Coordinators is how many coordinator processes run: 1 (default),
	// with its log in its own embedded PostgreSQL; or 2, sharing a log
	// server the harness runs, one serving and one its standby (tpcd
	// coordinator --lease), so that kill-node and pause-node of either
	// make the other take over. Faults that need the coordinator's own
	// server (kill-embedded-postgres, replace-coordinator) do not apply
	// to 2.
	Coordinators int
	// Slots, with 2 coordinators, makes both serve at once, each holding
	// one of two slots (tpcd coordinator --slots 2); clients start at
	// either. Default 1: one serves, the other is its standby.
	Slots int
	// Faults restricts the fault kinds (see FaultKinds); empty means all
	// that apply.
	Faults []string
	// Logger receives the harness's events (every fault, progress).
	Logger *slog.Logger
}

func (o *Options) setDefaults() error {
	if o.Binary == "" {
		return errors.New("chaos: Options.Binary (the tpcd executable) is required")
	}
	if _, err := os.Stat(o.Binary); err != nil {
		return fmt.Errorf("chaos: tpcd binary: %w", err)
	}
	if o.Duration <= 0 {
		o.Duration = time.Minute
	}
	if o.Participants <= 0 {
		o.Participants = 3
	}
	if o.Clients <= 0 {
		o.Clients = 8
	}
	if o.QuiesceTimeout <= 0 {
		o.QuiesceTimeout = 3 * time.Minute
	}
	if o.Coordinators == 0 {
		o.Coordinators = 1
	}
	if o.Coordinators != 1 && o.Coordinators != 2 {
		return fmt.Errorf("chaos: %d coordinators: run 1, or 2 sharing a log", o.Coordinators)
	}
	if o.Slots == 0 {
		o.Slots = 1
	}
	if o.Slots != 1 && (o.Slots != 2 || o.Coordinators != 2) {
		return fmt.Errorf("chaos: %d slots: run 1, or 2 with 2 coordinators", o.Slots)
	}
	ownLogOnly := []string{KillEmbeddedPostgres, ReplaceCoordinator}
	if len(o.Faults) == 0 {
		o.Faults = FaultKinds()
		if o.Coordinators == 2 {
			o.Faults = slices.DeleteFunc(o.Faults, func(k string) bool { return slices.Contains(ownLogOnly, k) })
		}
	}
	for _, k := range o.Faults {
		if !slices.Contains(FaultKinds(), k) {
			return fmt.Errorf("chaos: unknown fault kind %q (known: %v)", k, FaultKinds())
		}
		if o.Coordinators == 2 && slices.Contains(ownLogOnly, k) {
			return fmt.Errorf("chaos: fault %s needs the coordinator's own embedded PostgreSQL; two coordinators share a log server", k)
		}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Seed == 0 {
		o.Seed = uint64(time.Now().UnixNano())
	}
	return nil
}

// progressEvery is how often a running harness logs its counts.
const progressEvery = 10 * time.Second

// Run starts a cluster, runs the workload under faults for opts.Duration,
// restores the cluster, waits until it is quiet and checks every
// transaction. It returns an error when the run could not be carried out
// (set-up failed, interrupted); what the run found is in the report, whose
// OK says whether anything was wrong. Everything it started is stopped, and
// removed unless opts.Keep is set, before it returns.
func Run(ctx context.Context, opts Options) (rep *Report, err error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	log := opts.Logger
	rep = &Report{Seed: opts.Seed, Participants: opts.Participants, Clients: opts.Clients, Coordinators: opts.Coordinators, Slots: opts.Slots}

	root, err := makeRoot(opts.Keep)
	if err != nil {
		return rep, err
	}
	var c *cluster
	defer func() {
		if c != nil {
			if serr := c.stop(); serr != nil {
				rep.Problems = append(rep.Problems, "stop: "+serr.Error())
			}
		}
		if opts.Keep == "" {
			if rerr := os.RemoveAll(root); rerr != nil {
				rep.Problems = append(rep.Problems, "remove: "+rerr.Error())
			}
		} else {
			rep.Dir = root
		}
	}()

	log.Info("starting servers and nodes", "dir", root, "participants", opts.Participants, "seed", opts.Seed)
	c, err = startCluster(ctx, opts, root, log)
	if err != nil {
		if ctx.Err() != nil {
			return rep, fmt.Errorf("interrupted during set-up: %w", context.Cause(ctx))
		}
		return rep, fmt.Errorf("start cluster: %w", err)
	}
	wl := newWorkload(ctx, c.coordAddrs(), opts.Participants, log)
	// One transaction across every node before any fault: a cluster that
	// cannot commit at all is a set-up failure, not a finding.
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	_, err = wl.probe(sctx, everyNode(opts.Participants))
	cancel()
	if err != nil {
		return rep, fmt.Errorf("cluster does not commit before any fault: %w", err)
	}

	log.Info("injecting faults", "for", opts.Duration, "clients", opts.Clients)
	faultCtx, stopFaults := context.WithTimeout(ctx, opts.Duration)
	defer stopFaults()
	poller := newStatusPoller(c.coordAddrs())
	defer poller.cl.Close()
	inj := newInjector(ctx, c, wl, poller, opts.Seed, opts.Faults, log)
	began := time.Now()
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		t := time.NewTicker(progressEvery)
		defer t.Stop()
		for {
			select {
			case <-faultCtx.Done():
				return
			case <-t.C:
				a, cm, ab, un := wl.counts()
				total := 0
				for _, n := range inj.Counts() {
					total += n
				}
				log.Info("progress", "elapsed", time.Since(began).Round(time.Second), "transactions", a,
					"committed", cm, "aborted", ab, "unknown", un, "faults", total)
			}
		}
	}()
	wl.start(opts.Clients, opts.Seed)
	inj.run(faultCtx, began.Add(opts.Duration)) // returns once every fault is healed
	<-progressDone
	rep.FaultDuration = time.Since(began)
	rep.Faults = inj.Counts()
	for _, e := range inj.errs {
		rep.Problems = append(rep.Problems, "fault: "+e.Error())
	}
	rep.EmbeddedKills, rep.Replacements, rep.ReplaceSkipped = inj.kills, inj.replacements, inj.replaceSkipped
	log.Info("faults stopped; letting clients finish their transactions")
	wl.stopAndWait()
	if ctx.Err() != nil {
		return rep, fmt.Errorf("interrupted: %w", context.Cause(ctx))
	}

	// Restore, then wait for the cluster to serve and to become quiet.
	restored := time.Now()
	qctx, cancel := context.WithTimeout(ctx, opts.QuiesceTimeout)
	defer cancel()
	if err := c.restore(qctx); err != nil {
		rep.Problems = append(rep.Problems, "restore: "+err.Error())
	}
	if err := c.waitServing(qctx, opts.QuiesceTimeout); err != nil {
		rep.Problems = append(rep.Problems, "after restore: "+err.Error())
	}
	log.Info("restored; probing and waiting for every transaction to end")
	attempts, err := wl.probe(qctx, everyNode(opts.Participants))
	rep.ProbeAttempts = attempts
	if err != nil {
		rep.Problems = append(rep.Problems, "after restore: "+err.Error())
	}
	records := wl.snapshot()
	var obs Observed
	// Earlier incarnations were quiet, with their states read, when they
	// were replaced; the last one is asked now.
	q, err := c.waitQuiet(qctx, poller, keysOf(records, c.current()))
	obs.Prepared = q.gids
	if err != nil {
		if ctx.Err() != nil {
			return rep, fmt.Errorf("interrupted: %w", context.Cause(ctx))
		}
		rep.Problems = append(rep.Problems, fmt.Sprintf("not quiet %v after the faults: %s", opts.QuiesceTimeout, q))
	}
	rep.Quiesced = time.Since(restored)
	rep.Problems = append(rep.Problems, c.checkJoined(qctx)...)

	// Observe the data with a fresh bound: the quiescence bound may be spent.
	octx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	obs.Status = poller.snapshot()
	for i, uri := range c.dataURIs {
		rows, err := rowsPerTx(octx, uri)
		if err != nil {
			return rep, fmt.Errorf("read rows of participant %d: %w", i, err)
		}
		obs.Rows = append(obs.Rows, rows)
	}

	// Stop the nodes before reading their logs, so the logs are complete.
	if err := c.stopNodes(); err != nil {
		rep.Problems = append(rep.Problems, "stop nodes: "+err.Error())
	}
	rep.Starts, rep.UnexpectedExits, rep.ErrorLines = map[string]int{}, map[string]int{}, map[string]int{}
	for i, p := range c.allProcs() {
		starts, unexpected, _ := p.Stats()
		rep.Starts[p.name], rep.UnexpectedExits[p.name] = starts, unexpected
		alarms, facts, err := scanLog(p.logPath)
		if err != nil {
			rep.Problems = append(rep.Problems, fmt.Sprintf("read log of %s: %v", p.name, err))
		}
		if n := len(facts.refusals); n > 0 {
			// The harness replaces the coordinator only once nothing is in
			// doubt, so no participant had a reason to refuse the new one.
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s refused the new coordinator %d times although the old cluster was quiet; first: %s", p.name, n, facts.refusals[0]))
		}
		rep.ErrorLines[p.name] = facts.errorLines
		if i == 0 || p == c.second {
			rep.CoordRecoveries += facts.recoveries
			rep.CoordInFlight += facts.pending
			rep.TakeOvers += facts.takeOvers
		} else {
			rep.PartRecoveries += facts.recoveries
			rep.PartInDoubt += facts.pending
		}
		for _, a := range alarms {
			obs.Alarms = append(obs.Alarms, p.name+": "+a)
		}
	}

	rep.Verdict = Check(records, obs)
	for _, k := range rep.EmbeddedKills {
		if k.Failure != "" {
			rep.Violations = append(rep.Violations, fmt.Sprintf("the coordinator did not heal after its own postgres (postmaster %d) was killed: %s", k.Postmaster, k.Failure))
		}
	}
	for _, r := range records {
		if r.Client < 0 {
			if !r.Orphaned {
				rep.Probes++ // checked like the rest, counted apart
			}
			continue
		}
		rep.Attempted++
		switch r.Told {
		case ToldCommit:
			rep.Committed++
		case ToldAbort:
			rep.Aborted++
		default:
			rep.Unknown++
		}
		if r.RolledBack {
			rep.RolledBack++
		}
		if r.PlannedFail {
			rep.PlannedFail++
		}
		if r.OneCall {
			rep.OneCall++
		}
		if r.direct != nil {
			rep.Direct++
		}
		if r.Plain {
			rep.Plain++
		}
	}
	rep.Incarnations, rep.ReusedIDs = describeIncarnations(c.ClusterIDs(), records)
	rep.Orphans, rep.OrphansMet = countOrphans(records)
	rep.BeginFailures = int(wl.beginFailures.Load())
	rep.BeginRepeats = int(wl.beginRepeats.Load())
	rep.Reasons = topReasons(records)
	return rep, nil
}

// makeRoot returns the directory everything of the run lives in.
func makeRoot(keep string) (string, error) {
	if keep == "" {
		dir, err := os.MkdirTemp("", "tpcd-chaos-")
		if err != nil {
			return "", fmt.Errorf("create temporary directory: %w", err)
		}
		return dir, nil
	}
	dir, err := filepath.Abs(keep)
	if err != nil {
		return "", err
	}
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return "", fmt.Errorf("--keep %s: directory is not empty; give a new one", keep)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create %s: %w", dir, err)
	}
	return dir, nil
}
