package chaos

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"
)

// Fault kinds. Each names what happens to one target; see docs/CHAOS.md.
const (
	// KillNode SIGKILLs a tpcd process and starts it again after a pause
	// (sometimes none, sometimes longer than the vote timeout).
	KillNode = "kill-node"
	// PauseNode SIGSTOPs a tpcd process and SIGCONTs it later: it keeps its
	// connections but answers nothing meanwhile.
	PauseNode = "pause-node"
	// KillPostgres SIGKILLs a PostgreSQL server (postmaster and backends)
	// and restarts it, with crash recovery, after a pause.
	KillPostgres = "kill-postgres"
	// LinkCut closes every connection of a link at once: messages in
	// flight are lost and the dialler reconnects.
	LinkCut = "link-cut"
	// LinkDown cuts a link and refuses connections for a while, as if the
	// peer were down while it is in fact alive.
	LinkDown = "link-down"
	// LinkBlackhole discards everything on a link for a while over
	// connections that stay open, then cuts them.
	LinkBlackhole = "link-blackhole"
	// LinkStall holds everything on a link for a while, then delivers it:
	// late messages, reordered relative to the other links.
	LinkStall = "link-stall"
	// LinkDelay adds latency (10-300 ms) to a link for a while.
	LinkDelay = "link-delay"
	// KillEmbeddedPostgres SIGKILLs the postmaster of the coordinator's own
	// PostgreSQL, which the coordinator must restart by itself: ready again,
	// the restart counted, and committing within 30 s.
	KillEmbeddedPostgres = "kill-embedded-postgres"
	// ReplaceCoordinator replaces the coordinator by a fresh one with an
	// empty log (a new cluster, issuing the same transaction ids again),
	// once nothing of the old cluster is in doubt.
	ReplaceCoordinator = "replace-coordinator"
)

// faultWeights is how many cards of each kind one deck holds. Kinds are
// drawn from a shuffled deck so every kind comes up once per deck, however
// the dice fall.
var faultWeights = []struct {
	kind   string
	weight int
}{
	{KillNode, 3},
	{KillPostgres, 2},
	{PauseNode, 2},
	{LinkCut, 3},
	{LinkDown, 2},
	{LinkBlackhole, 2},
	{LinkStall, 2},
	{LinkDelay, 2},
	{KillEmbeddedPostgres, 1},
	{ReplaceCoordinator, 1},
}

// FaultKinds lists every fault kind.
func FaultKinds() []string {
	var out []string
	for _, w := range faultWeights {
		out = append(out, w.kind)
	}
	return out
}

// Pacing of the injector.
const (
	minGap    = 300 * time.Millisecond
	maxGap    = 1500 * time.Millisecond
	maxActive = 3 // faults in effect at once
)

// injector injects faults at random (from a seeded generator) until its
// context ends; then every fault in effect is healed.
type injector struct {
	c      *cluster
	wl     *workload
	poller *statusPoller
	rng    *rand.Rand
	kinds  map[string]bool
	log    *slog.Logger
	start  time.Time
	// runCtx ends only when the whole run is interrupted: what a fault
	// must finish after the faults' time is over (watching a node heal,
	// completing a replacement) runs under it.
	runCtx context.Context
	// everyKindBy is when kinds not yet injected go to the top of the
	// deck, so that a run long enough injects each at least once.
	everyKindBy time.Time

	mu             sync.Mutex
	busy           map[string]bool // targets under a fault
	counts         map[string]int
	errs           []error
	kills          []EmbeddedKill
	replacements   []Replacement
	replaceSkipped []string
	wg             sync.WaitGroup
	deck           []string
	// nodeFaults counts kill-node and pause-node faults, to aim some at
	// the serving coordinator when two share a log.
	nodeFaults int
}

func newInjector(runCtx context.Context, c *cluster, wl *workload, poller *statusPoller, seed uint64, kinds []string, log *slog.Logger) *injector {
	in := &injector{
		c: c, wl: wl, poller: poller, runCtx: runCtx,
		rng: rand.New(rand.NewPCG(seed, 0x6368616f73)), kinds: map[string]bool{}, log: log,
		busy: map[string]bool{}, counts: map[string]int{},
	}
	for _, k := range kinds {
		in.kinds[k] = true
	}
	return in
}

func (in *injector) draw() string {
	if len(in.deck) == 0 {
		for _, w := range faultWeights {
			if in.kinds[w.kind] {
				for range w.weight {
					in.deck = append(in.deck, w.kind)
				}
			}
		}
		in.rng.Shuffle(len(in.deck), func(i, j int) { in.deck[i], in.deck[j] = in.deck[j], in.deck[i] })
	}
	k := in.deck[0]
	in.deck = in.deck[1:]
	return k
}

// promoteMissing puts every kind not injected yet on top of the deck.
func (in *injector) promoteMissing() {
	var missing []string
	for _, w := range faultWeights {
		if in.kinds[w.kind] && in.Counts()[w.kind] == 0 {
			missing = append(missing, w.kind)
			if i := slices.Index(in.deck, w.kind); i >= 0 {
				in.deck = slices.Delete(in.deck, i, i+1)
			}
		}
	}
	if len(missing) > 0 {
		in.log.Info("kinds not injected yet go first", "kinds", missing)
		in.deck = append(missing, in.deck...)
	}
}

// retryAfter is how many cards a kind whose targets are all busy goes
// down the deck: it is tried again soon, not only in the next deck.
const retryAfter = 2

// run injects until ctx ends, then waits for every fault to be healed.
// A third of the way through (by end, the time the faults end), kinds
// not yet injected go to the top of the deck.
func (in *injector) run(ctx context.Context, end time.Time) {
	in.start = time.Now()
	in.everyKindBy = in.start.Add(end.Sub(in.start) / 3)
	promoted := false
	defer in.wg.Wait()
	for {
		gap := minGap + time.Duration(in.rng.Int64N(int64(maxGap-minGap)))
		sleepCtx(ctx, gap)
		if ctx.Err() != nil {
			return
		}
		if in.active() >= maxActive {
			continue
		}
		if !promoted && !time.Now().Before(in.everyKindBy) {
			in.promoteMissing()
			promoted = true
		}
		kind := in.draw()
		if !in.inject(ctx, kind) {
			// Every target of the kind is under a fault: try it soon.
			at := min(retryAfter, len(in.deck))
			in.deck = slices.Insert(in.deck, at, kind)
		}
	}
}

// active is how many targets are under a fault.
func (in *injector) active() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.busy)
}

// target picks a free target among names and marks it busy; "" if all
// are busy.
func (in *injector) target(names []string) string {
	order := in.rng.Perm(len(names))
	in.mu.Lock()
	defer in.mu.Unlock()
	for _, i := range order {
		if !in.busy[names[i]] {
			in.busy[names[i]] = true
			return names[i]
		}
	}
	return ""
}

func (in *injector) release(target string) {
	in.mu.Lock()
	delete(in.busy, target)
	in.mu.Unlock()
}

func (in *injector) fail(err error) {
	in.log.Error("fault injection failed", "err", err)
	in.mu.Lock()
	in.errs = append(in.errs, err)
	in.mu.Unlock()
}

// uniform is a duration in [lo, hi).
func (in *injector) uniform(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(in.rng.Int64N(int64(hi-lo)))
}

// inject applies one fault of the given kind and arranges for it to heal;
// false means every target of that kind is busy.
// All random choices happen here, on the injector's goroutine, so a seed
// gives the same sequence of faults.
func (in *injector) inject(ctx context.Context, kind string) bool {
	var nodeTargets, linkTargets []string
	procs := in.c.allProcs() // either coordinator, when two share a log
	for _, p := range procs {
		nodeTargets = append(nodeTargets, p.name)
	}
	participants := nodeTargets[1:len(in.c.nodes)]
	for _, l := range in.c.links {
		linkTargets = append(linkTargets, l.Name())
	}
	switch kind {
	case KillNode, PauseNode:
		name := ""
		if in.c.second != nil {
			// With two coordinators, every third node fault goes to the
			// one serving, so that the other takes over in every run.
			in.nodeFaults++
			if in.nodeFaults%3 == 1 {
				name = in.servingCoordinator(ctx)
			}
		}
		if name == "" {
			name = in.target(nodeTargets)
		}
		if name == "" {
			return false
		}
		p := procs[slices.Index(nodeTargets, name)]
		if kind == KillNode {
			var down time.Duration
			switch r := in.rng.IntN(10); {
			case r < 3: // straight back up
			case r < 7:
				down = in.uniform(100*time.Millisecond, time.Second)
			default: // longer than the vote timeout
				down = in.uniform(time.Second, 4*time.Second)
			}
			in.hold(ctx, kind, name, down, func() {
				if !p.Kill() {
					in.log.Info("node was not running when killed", "node", name)
				}
			}, p.Release)
		} else {
			in.hold(ctx, kind, name, in.uniform(200*time.Millisecond, 3*time.Second), func() { p.Pause() }, p.Resume)
		}
	case KillEmbeddedPostgres:
		return in.killEmbeddedPostgres(ctx)
	case ReplaceCoordinator:
		in.replaceCoordinator(ctx)
	case KillPostgres:
		// The servers the harness runs: the participants'. The
		// coordinator's is its own (KillEmbeddedPostgres).
		name := in.target(prefixed("pg:", participants))
		if name == "" {
			return false
		}
		s := in.c.servers[slices.Index(participants, strings.TrimPrefix(name, "pg:"))]
		down := in.uniform(0, 500*time.Millisecond)
		if in.rng.IntN(10) >= 4 {
			down = in.uniform(500*time.Millisecond, 3*time.Second)
		}
		in.hold(ctx, kind, name, down, func() {
			if err := s.Kill(); err != nil {
				in.fail(fmt.Errorf("kill postgres of %s: %w", s.name, err))
			}
		}, func() {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
			defer cancel()
			if err := s.Restart(rctx); err != nil {
				in.fail(err)
			}
		})
	default:
		name := in.target(linkTargets)
		if name == "" {
			return false
		}
		l := in.c.links[slices.Index(linkTargets, name)]
		switch kind {
		case LinkCut:
			n := l.Cut()
			in.record(kind, name, 0, "connections", n)
			in.release(name)
		case LinkDown:
			in.hold(ctx, kind, name, in.uniform(200*time.Millisecond, 4*time.Second), l.Down, l.Heal)
		case LinkBlackhole:
			in.hold(ctx, kind, name, in.uniform(200*time.Millisecond, 4*time.Second), l.Blackhole, l.Heal)
		case LinkStall:
			in.hold(ctx, kind, name, in.uniform(200*time.Millisecond, 4*time.Second), l.Stall, l.Heal)
		case LinkDelay:
			lat := in.uniform(10*time.Millisecond, 300*time.Millisecond)
			in.hold(ctx, kind, name, in.uniform(time.Second, 5*time.Second), func() { l.Delay(lat) }, l.Heal, "latency", lat)
		}
	}
	return true
}

// servingCoordinator marks busy and returns the name of the coordinator
// (of two) that answers a ping now; "" if none does or it is busy.
func (in *injector) servingCoordinator(ctx context.Context) string {
	addrs := in.c.coordAddrs()
	for i, p := range []*proc{in.c.nodes[0], in.c.second} {
		addr := addrs[i]
		in.mu.Lock()
		busy := in.busy[p.name] // a paused one would not answer the ping
		in.mu.Unlock()
		if busy {
			continue
		}
		if _, err := pingCluster(ctx, []string{addr}); err != nil {
			continue
		}
		in.mu.Lock()
		defer in.mu.Unlock()
		if in.busy[p.name] {
			return ""
		}
		in.busy[p.name] = true
		return p.name
	}
	return ""
}

// hold applies a fault now and heals it after d, or at once when ctx ends.
func (in *injector) hold(ctx context.Context, kind, target string, d time.Duration, apply, heal func(), attrs ...any) {
	apply()
	in.record(kind, target, d, attrs...)
	in.wg.Add(1)
	go func() {
		defer in.wg.Done()
		defer in.release(target)
		sleepCtx(ctx, d)
		heal()
		in.log.Debug("healed", "kind", kind, "target", target)
	}()
}

func (in *injector) record(kind, target string, d time.Duration, attrs ...any) {
	in.mu.Lock()
	in.counts[kind]++
	in.mu.Unlock()
	args := append([]any{"kind", kind, "target", target, "at", time.Since(in.start).Round(time.Millisecond)}, attrs...)
	if d > 0 {
		args = append(args, "for", d.Round(time.Millisecond))
	}
	in.log.Info("fault", args...)
}

// Counts returns the faults injected so far, by kind.
func (in *injector) Counts() map[string]int {
	in.mu.Lock()
	defer in.mu.Unlock()
	out := map[string]int{}
	for k, v := range in.counts {
		out[k] = v
	}
	return out
}

func prefixed(p string, names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = p + n
	}
	return out
}
