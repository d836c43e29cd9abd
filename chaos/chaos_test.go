package chaos

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tpcd/tpcd/internal/pgtest"
	"github.com/tpcd/tpcd/internal/testbin"
)

// Environment knobs of TestChaos, for longer or repeated runs by hand.
const (
	durationEnv = "TPCD_CHAOS_DURATION" // e.g. 10m; default 60s
	seedEnv     = "TPCD_CHAOS_SEED"     // default: from the clock, logged
)

func TestMain(m *testing.M) { os.Exit(testbin.Main(m, nil)) }

// TestChaos is the CI run: a coordinator and three participants under a
// minute of random faults, then every transaction checked.
func TestChaos(t *testing.T) {
	duration := time.Minute
	if v := os.Getenv(durationEnv); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("%s: %v", durationEnv, err)
		}
		duration = d
	}
	rep := runChaos(t, Options{Duration: duration})
	if rep.OneCall == 0 {
		t.Error("no transaction went in one transact call: that path was not exercised")
	}
	if rep.Direct == 0 {
		t.Error("no transaction sent its statements straight to the participants: that path was not exercised")
	}
	if rep.Plain == 0 {
		t.Error("no plain transaction went to its participant: that path was not exercised")
	}
	// A deck holds every kind, and kinds not drawn a third of the way
	// through go first; a minute of faults draws several decks.
	if duration >= time.Minute {
		for _, k := range FaultKinds() {
			if rep.Faults[k] == 0 {
				t.Errorf("no %s fault injected", k)
			}
		}
		// The replaced coordinator must have issued ids the first had
		// issued too, or the case the incarnation keys exist for did not
		// come up.
		if len(rep.Incarnations) < 2 || rep.ReusedIDs == 0 {
			t.Errorf("%d coordinator incarnations, %d tx ids issued by more than one: a replacement that reissued ids was not exercised", len(rep.Incarnations), rep.ReusedIDs)
		}
		// The sharp case: a new coordinator's transaction reaching a
		// participant that still holds the old cluster's open work under
		// the same id.
		if rep.OrphansMet == 0 {
			t.Errorf("%d transactions left open by replaced coordinators, none of their ids issued again by the next coordinator to a transaction that sent statements", rep.Orphans)
		}
		if !slices.ContainsFunc(rep.Replacements, func(r Replacement) bool { return r.OpenAtResume > 0 }) {
			t.Errorf("no replacement left open work on the participants for the new coordinator's transactions to meet (%+v)", rep.Replacements)
		}
		healed := 0
		for _, k := range rep.EmbeddedKills {
			if k.Failure == "" {
				healed++
			}
		}
		if healed == 0 {
			t.Errorf("%d kills of the coordinator's own postgres, none healed: supervision was not shown to work", len(rep.EmbeddedKills))
		}
	}
}

// TestChaosTwoCoordinators runs two coordinators on one log, killing and
// pausing either (every third node fault the serving one) among link
// faults: the standby must take over, with every transaction checked.
func TestChaosTwoCoordinators(t *testing.T) {
	rep := runChaos(t, Options{
		Duration:     30 * time.Second,
		Coordinators: 2,
		Faults:       []string{KillNode, PauseNode, LinkCut, LinkDown, LinkStall},
	})
	if rep.TakeOvers < 2 {
		t.Errorf("the log's slot was taken %d times: no coordinator took over from the other", rep.TakeOvers)
	}
}

// TestChaosTwoSlots runs two coordinators serving at once, each a slot of
// one log (--slots 2), with clients starting at either, killing and
// pausing either among link faults: the other, or the killed one back,
// must take its slot over, with every transaction checked.
func TestChaosTwoSlots(t *testing.T) {
	rep := runChaos(t, Options{
		Duration:     30 * time.Second,
		Coordinators: 2,
		Slots:        2,
		Faults:       []string{KillNode, PauseNode, LinkCut, LinkDown, LinkStall},
	})
	// The first starts take both slots; a fault must have moved one.
	if rep.TakeOvers < 3 {
		t.Errorf("the log's slots were taken %d times, the first starts included: no slot changed hands", rep.TakeOvers)
	}
}

// runChaos runs the harness with opts (a binary, three participants,
// eight clients and a seed filled in) and fails the test on any violation
// or problem, or if nothing committed; on failure it logs the end of the
// harness's and the nodes' logs.
func runChaos(t *testing.T, opts Options) *Report {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv(seedEnv); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("%s: %v", seedEnv, err)
		}
		seed = s
	}
	t.Logf("seed %d (rerun the same fault sequence with %s=%d)", seed, seedEnv, seed)

	// The servers run as the postgres user when we are root, so the
	// directory must be reachable for it: not t.TempDir, which is private.
	parent, err := os.MkdirTemp("", "tpcd-chaos-test-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(parent, 0o755)
	keep := filepath.Join(parent, "run")
	var harnessLog testbin.SyncBuffer
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("harness log:\n%s", tail(harnessLog.String(), 200))
			for _, name := range []string{"coordinator", secondCoordinator, "participant-0", "participant-1", "participant-2"} {
				if b, err := os.ReadFile(filepath.Join(keep, "logs", name+".log")); err == nil {
					t.Logf("%s log (end):\n%s", name, tail(string(b), 60))
				}
			}
		}
		os.RemoveAll(parent)
	})

	ctx, cancel := context.WithTimeout(context.Background(), opts.Duration+10*time.Minute)
	defer cancel()
	opts.Binary, opts.Participants, opts.Clients, opts.Seed = testbin.Binary(t), 3, 8, seed
	opts.PGBin, opts.Keep, opts.Logger = os.Getenv(pgtest.BinDirEnv), keep, slog.New(slog.NewTextHandler(&harnessLog, nil))
	rep, err := Run(ctx, opts)
	if rep != nil {
		var out bytes.Buffer
		rep.Print(&out)
		t.Logf("report:\n%s", out.String())
	}
	if err != nil {
		t.Fatalf("chaos run: %v", err)
	}
	if !rep.OK() {
		t.Fatalf("%d violations, %d problems (seed %d)", len(rep.Violations), len(rep.Problems), seed)
	}
	if rep.Committed == 0 {
		t.Fatal("no transaction committed under faults")
	}
	return rep
}

// tail keeps the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
