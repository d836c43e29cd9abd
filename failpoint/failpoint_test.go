package failpoint

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tpcd/tpcd/engine"
)

// helperEnv makes the test binary act as a process with failpoints (see
// TestHelperProcess) instead of running the tests.
const helperEnv = "TPCD_FAILPOINT_TEST_HELPER"

func TestParse(t *testing.T) {
	good := []struct {
		spec string
		want map[string]int
	}{
		{"participant/before-ack", map[string]int{PartBeforeAck: 1}},
		{" participant/before-ack = 3 ", map[string]int{PartBeforeAck: 3}},
		{"coordinator/after-decision-logged,participant/after-vote=2,", map[string]int{CoordAfterDecisionLogged: 1, PartAfterVote: 2}},
	}
	for _, tc := range good {
		got, err := Parse(tc.spec)
		if err != nil || !maps.Equal(got, tc.want) {
			t.Errorf("Parse(%q) = %v, %v; want %v", tc.spec, got, err, tc.want)
		}
	}
	bad := []string{"", ",", "participant/before-akc", "participant/before-ack=0", "participant/before-ack=x",
		"participant/before-ack=-1", "participant/before-ack,participant/before-ack=2"}
	for _, spec := range bad {
		if got, err := Parse(spec); err == nil {
			t.Errorf("Parse(%q) = %v, want an error", spec, got)
		}
	}
}

func TestNamesAreUniqueAndParse(t *testing.T) {
	names := Names()
	if len(slices.Compact(slices.Sorted(slices.Values(names)))) != len(names) {
		t.Fatalf("duplicate names in %v", names)
	}
	if _, err := Parse(strings.Join(names, ",")); err != nil {
		t.Fatal(err)
	}
}

// record arms spec with a die that records instead of killing, and undoes
// it when the test ends.
func record(t *testing.T, spec string) *[]string {
	t.Helper()
	ps, err := Parse(spec)
	if err != nil {
		t.Fatal(err)
	}
	var fired []string
	die = func(name string, n int64) { fired = append(fired, fmt.Sprintf("%s#%d", name, n)) }
	sleep = func(d time.Duration) { fired = append(fired, "linger "+d.String()) }
	arm(ps)
	t.Cleanup(func() {
		arm(nil)
		die, sleep = killSelf, time.Sleep
	})
	return &fired
}

func TestDisabledHitDoesNothing(t *testing.T) {
	if Enabled() {
		t.Skipf("%s is set in the test environment", EnvVar)
	}
	Hit(PartBeforeAck)
	BeforeSend(engine.AckMessage{TxID: 1})
}

func TestFiresOnTheNthHitOnly(t *testing.T) {
	fired := record(t, "participant/before-ack=3")
	for range 6 {
		Hit(PartBeforeAck)
		Hit(PartAfterVote) // not armed
	}
	if want := []string{"participant/before-ack#3"}; !slices.Equal(*fired, want) {
		t.Fatalf("fired %v, want %v", *fired, want)
	}
}

func TestHooksMapProtocolSteps(t *testing.T) {
	fired := record(t, strings.Join(Names(), ","))
	commit := engine.CoordDecided{TxID: 1, Outcome: engine.OutcomeCommit}
	abort := engine.CoordDecided{TxID: 2, Outcome: engine.OutcomeAbort}
	prepared := engine.PartPrepared{TxID: 3, GID: "tpcd:c:1:3:0"}

	steps := []struct {
		name string
		do   func()
		want string // "" when nothing may fire
	}{
		{"abort decision is not forced", func() { BeforeLog([]engine.Event{abort}) }, ""},
		{"commit decision before append", func() { BeforeLog([]engine.Event{abort, commit}) }, "linger 500ms," + CoordBeforeDecisionLogged},
		{"prepared before append", func() { BeforeLog([]engine.Event{prepared}) }, "linger 500ms," + PartBeforePreparedLogged},
		{"committed before append", func() { BeforeLog([]engine.Event{engine.PartCommitted{TxID: 3, GID: prepared.GID}}) }, "linger 500ms," + PartBeforeCommittedLogged},
		{"failed append", func() { AfterLog([]engine.Event{commit, prepared}, errors.New("down")) }, ""},
		{"durable commit decision", func() { AfterLog([]engine.Event{abort, commit}, nil) }, CoordAfterDecisionLogged},
		{"durable prepared", func() { AfterLog([]engine.Event{prepared}, nil) }, PartAfterPreparedLogged},
		{"presumed abort answer", func() { AfterSend(engine.DecisionRequest{TxID: 4, Outcome: engine.OutcomeAbort, Presumed: true}, nil) }, ""},
		{"commit decision not accepted", func() {
			d := engine.DecisionRequest{TxID: 4, Outcome: engine.OutcomeCommit}
			BeforeSend(d)
			AfterSend(d, errors.New("refused"))
		}, ""},
		{"commit decision accepted", func() {
			d := engine.DecisionRequest{TxID: 7, Outcome: engine.OutcomeCommit}
			BeforeSend(d)
			AfterSend(d, nil)
		}, CoordAfterDecisionSent},
		{"no vote", func() { AfterSend(engine.VoteMessage{TxID: 5, Vote: engine.VoteNo}, nil) }, ""},
		{"yes vote accepted", func() { AfterSend(engine.VoteMessage{TxID: 5, Vote: engine.VoteYes}, nil) }, PartAfterVote},
		{"ack about to leave", func() { BeforeSend(engine.AckMessage{TxID: 6, Outcome: engine.OutcomeCommit}) }, PartBeforeAck},
		{"vote about to leave", func() { BeforeSend(engine.VoteMessage{TxID: 6, Vote: engine.VoteYes}) }, ""},
		{"read-only prepare", func() { AfterData(engine.DataPrepare, engine.DataDone{ReadOnly: true}) }, ""},
		{"failed prepare", func() { AfterData(engine.DataPrepare, engine.DataDone{Err: "boom"}) }, ""},
		{"prepare", func() { AfterData(engine.DataPrepare, engine.DataDone{}) }, PartAfterPrepare},
		{"commit prepared to retry", func() { AfterData(engine.DataCommitPrepared, engine.DataDone{Err: "down", Retry: true}) }, ""},
		{"commit prepared", func() { AfterData(engine.DataCommitPrepared, engine.DataDone{}) }, PartAfterCommitPrepared},
	}
	for _, s := range steps {
		before := len(*fired)
		s.do()
		got := (*fired)[before:]
		switch {
		case s.want == "" && len(got) != 0:
			t.Errorf("%s: fired %v, want nothing", s.name, got)
		case s.want != "" && (len(got) != strings.Count(s.want, ",")+1 || !strings.HasPrefix(strings.Join(got, ","), s.want+"#")):
			t.Errorf("%s: fired %v, want %s", s.name, got, s.want)
		}
	}
}

// TestDecisionGate checks that coordinator/after-decision-sent holds the
// other sends of the chosen transaction until its first send is accepted,
// so that the process dies with the decision delivered to some
// participants and not sent to the others.
func TestDecisionGate(t *testing.T) {
	fired := record(t, "coordinator/after-decision-sent=2")
	decision := func(tx engine.TxID) engine.DecisionRequest {
		return engine.DecisionRequest{TxID: tx, Outcome: engine.OutcomeCommit}
	}
	waiting := func() int {
		gate.mu.Lock()
		defer gate.mu.Unlock()
		return gate.waiting
	}
	// held starts a send of tx that must wait at the gate, and returns once
	// it does.
	held := func(tx engine.TxID) chan struct{} {
		done := make(chan struct{})
		before := waiting()
		go func() {
			BeforeSend(decision(tx))
			close(done)
		}()
		for waiting() == before {
			runtime.Gosched()
		}
		return done
	}

	// The first transaction is not the second: its sends pass freely.
	BeforeSend(decision(1))
	BeforeSend(decision(1))
	AfterSend(decision(1), nil)
	AfterSend(decision(1), nil)

	// Transaction 2 is chosen; its first send goes, the second is held.
	BeforeSend(decision(2))
	done := held(2)
	BeforeSend(decision(3)) // other transactions are not held
	AfterSend(decision(3), nil)
	// The first send failed: the held one goes ahead, nothing fires, and
	// the next new transaction is chosen.
	AfterSend(decision(2), errors.New("refused"))
	<-done
	AfterSend(decision(2), nil)
	if len(*fired) != 0 {
		t.Fatalf("fired %v before any chosen send was accepted", *fired)
	}
	BeforeSend(decision(4))
	done = held(4)
	AfterSend(decision(4), nil)
	<-done // released only because the test's die returns
	// Transaction 3 went by while 2 was chosen, so 4 is the third counted.
	if want := []string{"coordinator/after-decision-sent#3"}; !slices.Equal(*fired, want) {
		t.Fatalf("fired %v, want %v", *fired, want)
	}
}

// TestHelperProcess is the body of the child processes below; it does
// nothing in a normal run.
func TestHelperProcess(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		return
	}
	for i := 1; i <= 3; i++ {
		Hit(PartAfterVote)
		fmt.Printf("survived hit %d\n", i)
	}
	os.Exit(0)
}

func helper(t *testing.T, spec string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), helperEnv+"=1", EnvVar+"="+spec)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}

func TestArmedProcessDiesBySIGKILL(t *testing.T) {
	stdout, stderr, err := helper(t, "participant/after-vote=2")
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("helper ended with %v, want it killed", err)
	}
	ws := ee.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("helper ended with %v, want SIGKILL", ws)
	}
	if stdout != "survived hit 1\n" {
		t.Fatalf("helper printed %q, want only the first hit survived", stdout)
	}
	if !strings.Contains(stderr, "failpoint participant/after-vote fired (hit 2)") {
		t.Fatalf("stderr %q does not announce the failpoint", stderr)
	}
}

func TestBadSpecStopsTheProcess(t *testing.T) {
	stdout, stderr, err := helper(t, "participant/after-vot")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("helper ended with %v, want exit status 2", err)
	}
	if stdout != "" || !strings.Contains(stderr, `unknown failpoint "participant/after-vot"`) {
		t.Fatalf("stdout %q, stderr %q", stdout, stderr)
	}
}

func BenchmarkHitDisabled(b *testing.B) {
	for b.Loop() {
		Hit(PartBeforeAck)
	}
}
