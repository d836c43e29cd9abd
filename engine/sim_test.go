package engine_test

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/engine/enginetest"
)

var (
	simSeeds = flag.Int("seeds", 10000, "number of seeds TestSim runs")
	simSeed  = flag.Uint64("seed", 1, "first seed TestSim runs; given without -seeds, replays that seed alone and logs its trace")
	simSteps = flag.Int("steps", 300, "random steps per seed before the quiet period")
	simLast  = flag.Int("trace-steps", 80, "steps of trace shown when a seed fails")
)

// simRNG derives a run's random source from its seed alone.
func simRNG(seed uint64) *rand.Rand {
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// traceTail keeps the last n steps of a simulation trace.
type traceTail struct {
	n     int
	steps [][]string
}

func (t *traceTail) add(line string) {
	if strings.HasPrefix(line, "--- ") || len(t.steps) == 0 {
		t.steps = append(t.steps, nil)
		if len(t.steps) > t.n {
			t.steps = t.steps[1:]
		}
	}
	last := &t.steps[len(t.steps)-1]
	*last = append(*last, line)
}

func (t *traceTail) String() string {
	var b strings.Builder
	for _, s := range t.steps {
		for _, l := range s {
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}

// TestSim runs the randomized simulation for many seeds; see package
// enginetest for what it does and checks. A failure names its seed and shows
// the end of its trace; -seed=S replays it.
func TestSim(t *testing.T) {
	simulateSeeds(t, enginetest.SimConfig{Steps: *simSteps}, *simSeeds)
}

// simulateSeeds runs cfg for count seeds from -seed (-seeds, when given,
// says how many; -short runs at most 500), in parallel, and fails with the
// lowest failing seed, replayed with its trace. -seed alone replays that
// seed and logs its trace.
func simulateSeeds(t *testing.T, cfg enginetest.SimConfig, count int) {
	first := *simSeed
	if flagSet("seeds") {
		count = *simSeeds
	}
	replay := flagSet("seed") && !flagSet("seeds")
	if replay {
		count = 1
	} else if testing.Short() {
		count = min(count, 500)
	}
	withTrace := func(trace func(string)) enginetest.SimConfig {
		c := cfg
		c.Trace = trace
		return c
	}
	if replay {
		var lines []string
		stats, err := enginetest.Simulate(simRNG(first), withTrace(func(s string) { lines = append(lines, s) }))
		t.Logf("seed %d trace:\n%s", first, strings.Join(lines, "\n"))
		t.Logf("stats: %+v", stats)
		if err != nil {
			t.Fatalf("seed %d: %v", first, err)
		}
		return
	}

	var (
		next    atomic.Uint64
		mu      sync.Mutex
		failed  = uint64(0)
		failErr error
		total   enginetest.SimStats
	)
	next.Store(first)
	end := first + uint64(count)
	start := time.Now()
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for {
				seed := next.Add(1) - 1
				if seed >= end {
					return
				}
				mu.Lock()
				stop := failErr != nil && seed > failed
				mu.Unlock()
				if stop {
					return
				}
				stats, err := enginetest.Simulate(simRNG(seed), cfg)
				mu.Lock()
				addStats(&total, stats)
				if err != nil && (failErr == nil || seed < failed) {
					failed, failErr = seed, err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	t.Logf("%d seeds from %d in %s (%.0f seeds/s); totals %+v", count, first, elapsed.Round(time.Millisecond), float64(count)/elapsed.Seconds(), total)
	if failErr != nil {
		tail := &traceTail{n: *simLast}
		_, err := enginetest.Simulate(simRNG(failed), withTrace(tail.add))
		if err == nil || err.Error() != failErr.Error() {
			t.Errorf("seed %d did not fail the same way when replayed: %v", failed, err)
		}
		t.Fatalf("seed %d: %v\nreplay: go test ./engine -run '%s$' -seed=%d -v\nlast %d steps:\n%s", failed, failErr, t.Name(), failed, *simLast, tail)
	}
}

// addStats adds each of the counts in s to the same count in t.
func addStats(t *enginetest.SimStats, s enginetest.SimStats) {
	tv, sv := reflect.ValueOf(t).Elem(), reflect.ValueOf(s)
	for i := range tv.NumField() {
		tv.Field(i).SetInt(tv.Field(i).Int() + sv.Field(i).Int())
	}
}

// TestSimForgottenKeys runs the decider protocol with a coordinator that
// keeps one ended transaction in memory, so that calls repeated with their
// keys are answered after a lookup, and transactions over several
// participants run while their key is checked (docs/PROTOCOL.md).
func TestSimForgottenKeys(t *testing.T) {
	simulateSeeds(t, enginetest.SimConfig{Steps: *simSteps, Protocol: engine.ProtocolDecider, RememberEnded: 1}, 3000)
}

// TestSimCatchesBrokenRule breaks two-phase commit on purpose, from outside
// the engine: the harness forges yes votes so the coordinator commits on the
// first real one. The checker's own data-level invariant (not only the
// engine's Violation alarm) must notice for some seed.
func TestSimCatchesBrokenRule(t *testing.T) {
	caught := 0
	for seed := uint64(1); seed <= 500; seed++ {
		_, err := enginetest.Simulate(simRNG(seed), enginetest.SimConfig{Steps: *simSteps, ForgeVotes: true})
		if err == nil {
			continue
		}
		caught++
		if msg := firstLine(err.Error()); strings.Contains(msg, "committed on") {
			t.Logf("seed %d caught the forged votes (%d seeds caught something so far): %s", seed, caught, msg)
			return
		}
	}
	t.Fatalf("500 seeds with forged yes votes: %d reported something, none a transaction committed on one participant and not another", caught)
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// TestSimDeterministic runs one seed twice and compares the traces: the
// simulation is only replayable if nothing in it depends on map order or
// the wall clock.
func TestSimDeterministic(t *testing.T) {
	run := func() string {
		var b strings.Builder
		_, err := enginetest.Simulate(simRNG(7), enginetest.SimConfig{Steps: *simSteps, Trace: func(s string) { fmt.Fprintln(&b, s) }})
		if err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	if a, b := run(), run(); a != b {
		t.Fatal("two runs of seed 7 produced different traces")
	}
}

// TestSimCatchesCommitWithoutVotes plants a decider that commits as soon
// as it is asked, without the votes its voters send it: the checker must
// find a transaction committed by its decider while another branch's
// writes are not prepared.
func TestSimCatchesCommitWithoutVotes(t *testing.T) {
	simCatchesBrokenDecider(t, "a commit without votes", enginetest.SimConfig{ForgeVoterVotes: true})
}

// TestSimCatchesEarlyAbort breaks the decider rule on purpose, from outside
// the engines: a branch in doubt hears abort from its decider the moment
// it asks, as from a decider that concluded abort while its own branch
// could still commit. The checker must notice a transaction committed by
// its decider and rolled back elsewhere.
func TestSimCatchesEarlyAbort(t *testing.T) {
	simCatchesBrokenDecider(t, "an early abort", enginetest.SimConfig{ForgeEarlyAbort: true})
}

// TestSimCatchesPromptAckResent breaks the prompt-ack rule on purpose:
// every decision asks for a prompt ack, resends and aborts too. A
// participant of an older release refuses the field, so a resend that
// carried it would never apply the commit there; the checker must notice.
func TestSimCatchesPromptAckResent(t *testing.T) {
	for seed := uint64(1); seed <= 500; seed++ {
		_, err := enginetest.Simulate(simRNG(seed), enginetest.SimConfig{Steps: *simSteps, ForgePromptAcks: true})
		if err != nil && strings.Contains(err.Error(), "asks for a prompt ack") {
			t.Logf("seed %d caught it: %s", seed, firstLine(err.Error()))
			return
		}
	}
	t.Fatal("500 seeds with a prompt ack on every decision: none reported one")
}

// simCatchesBrokenDecider runs up to 2,000 seeds of the decider protocol
// with the planted bug cfg names, until one reports a transaction its
// decider committed and another branch rolled back.
func simCatchesBrokenDecider(t *testing.T, bug string, cfg enginetest.SimConfig) {
	cfg.Steps, cfg.Protocol = *simSteps, engine.ProtocolDecider
	caught := 0
	for seed := uint64(1); seed <= 2000; seed++ {
		_, err := enginetest.Simulate(simRNG(seed), cfg)
		if err == nil {
			continue
		}
		caught++
		if msg := firstLine(err.Error()); strings.Contains(msg, "rolled back") || strings.Contains(msg, "not prepared") {
			t.Logf("seed %d caught %s (%d seeds caught something so far): %s", seed, bug, caught, msg)
			return
		}
	}
	t.Fatalf("2000 seeds with %s: %d reported something, none a transaction committed by its decider and rolled back elsewhere", bug, caught)
}
