package failpoint

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// EnvVar names the environment variable that arms failpoints.
const EnvVar = "TPCD_FAILPOINTS"

// The failpoints. Each name is "role/step"; docs/FAILPOINTS.md has the
// details and the recovery each one exercises.
const (
	// CoordBeforeDecisionLogged: a commit decision is in the log batch about
	// to be appended, not yet durable (the process lingers first).
	CoordBeforeDecisionLogged = "coordinator/before-decision-logged"
	// CoordAfterDecisionLogged: a commit decision is durable; no client and
	// no participant has heard of it.
	CoordAfterDecisionLogged = "coordinator/after-decision-logged"
	// CoordAfterDecisionSent: one participant accepted a commit decision;
	// the transaction's other participants have not been sent theirs.
	CoordAfterDecisionSent = "coordinator/after-decision-sent"
	// PartAfterPrepare: PREPARE TRANSACTION succeeded; the Prepared event is
	// not logged and no vote left.
	PartAfterPrepare = "participant/after-prepare"
	// PartBeforePreparedLogged: a Prepared event is in the log batch about
	// to be appended, not yet durable (the process lingers first).
	PartBeforePreparedLogged = "participant/before-prepared-logged"
	// PartAfterPreparedLogged: the Prepared event is durable; the yes vote
	// has not left.
	PartAfterPreparedLogged = "participant/after-prepared-logged"
	// PartAfterVote: a yes vote went out to the coordinator (written: votes
	// are one-way).
	PartAfterVote = "participant/after-vote"
	// PartAfterCommitPrepared: COMMIT PREPARED succeeded; the Committed event
	// is not logged and no ack left.
	PartAfterCommitPrepared = "participant/after-commit-prepared"
	// PartBeforeCommittedLogged: a Committed event is in the log batch about
	// to be appended, not yet durable (the process lingers first).
	PartBeforeCommittedLogged = "participant/before-committed-logged"
	// PartBeforeAck: an acknowledgement of a decision is about to be sent.
	PartBeforeAck = "participant/before-ack"

	// The decider protocol's steps.

	// CoordBeforePreparingLogged: a coord.preparing naming a decider is in
	// the log batch about to be appended, not yet durable (the process
	// lingers first, and deciders commit meanwhile).
	CoordBeforePreparingLogged = "coordinator/before-preparing-logged"
	// CoordAfterBranchAsked: the decider accepted the coordinator's request
	// to commit its branch; the coordinator has not heard the outcome.
	CoordAfterBranchAsked = "coordinator/after-branch-asked"
	// PartBeforeBranchCommit: a decider is about to COMMIT its branch (its
	// marker inside); nothing of it has reached the data database.
	PartBeforeBranchCommit = "participant/before-branch-commit"
	// PartAfterBranchCommit: the decider's COMMIT succeeded, so the
	// transaction is decided commit; nothing is logged and nobody has heard.
	PartAfterBranchCommit = "participant/after-branch-commit"
	// PartAfterSettle: a decider settled a branch someone asked about (its
	// tombstone is durable, or its marker was found); nobody heard.
	PartAfterSettle = "participant/after-settle"
)

// Names lists every failpoint, coordinator's first.
func Names() []string {
	return []string{
		CoordBeforeDecisionLogged, CoordAfterDecisionLogged, CoordAfterDecisionSent,
		PartAfterPrepare, PartBeforePreparedLogged, PartAfterPreparedLogged, PartAfterVote,
		PartAfterCommitPrepared, PartBeforeCommittedLogged, PartBeforeAck,
		CoordBeforePreparingLogged, CoordAfterBranchAsked, PartBeforeBranchCommit, PartAfterBranchCommit, PartAfterSettle,
	}
}

// point is one armed failpoint.
type point struct {
	at   int64 // fire on this hit
	hits atomic.Int64
}

// Linger is how long a failpoint placed before a log append holds that
// append before the process dies. Meanwhile the node runs on: anything
// that waits for the events stays held, anything wrongly released without
// waiting gets out. Dying at once would hide such an ordering bug, because
// the process would be gone before any message could leave.
const Linger = 500 * time.Millisecond

var (
	enabled atomic.Bool
	// points is written before enabled is set and never again.
	points map[string]*point
	// die ends the process and sleep lingers; tests of this package
	// replace them.
	die   = killSelf
	sleep = time.Sleep
)

func init() {
	spec, ok := os.LookupEnv(EnvVar)
	if !ok || strings.TrimSpace(spec) == "" {
		return
	}
	ps, err := Parse(spec)
	if err != nil {
		fmt.Fprintf(os.Stderr, "tpcd: %s: %v\n", EnvVar, err)
		os.Exit(2)
	}
	arm(ps)
	fmt.Fprintf(os.Stderr, "tpcd: failpoints armed: %s\n", spec)
}

// arm installs armed failpoints by name and hit number.
func arm(ps map[string]int) {
	points = make(map[string]*point, len(ps))
	for name, at := range ps {
		points[name] = &point{at: int64(at)}
	}
	gate.reset()
	enabled.Store(len(points) > 0)
}

// Parse reads a TPCD_FAILPOINTS value: comma-separated "name" or "name=N"
// items, N being the hit that fires (default 1). It returns the hit number
// by name.
func Parse(spec string) (map[string]int, error) {
	out := map[string]int{}
	for item := range strings.SplitSeq(spec, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, count, hasCount := strings.Cut(item, "=")
		name = strings.TrimSpace(name)
		if !slices.Contains(Names(), name) {
			return nil, fmt.Errorf("unknown failpoint %q (known: %s)", name, strings.Join(Names(), ", "))
		}
		at := 1
		if hasCount {
			n, err := strconv.Atoi(strings.TrimSpace(count))
			if err != nil || n < 1 {
				return nil, fmt.Errorf("failpoint %s: hit number %q must be a whole number from 1", name, count)
			}
			at = n
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("failpoint %s is named twice", name)
		}
		out[name] = at
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no failpoint named in %q", spec)
	}
	return out, nil
}

// Enabled reports whether any failpoint is armed.
func Enabled() bool { return enabled.Load() }

// Hit marks that the process reached the named step. If that failpoint is
// armed and this is the hit it waits for, the process dies on the spot.
func Hit(name string) {
	if !enabled.Load() {
		return
	}
	hit(name)
}

func hit(name string) { fire(name, 0) }

// fire counts a hit of name and, on the armed hit, waits linger and dies.
func fire(name string, linger time.Duration) {
	p := points[name]
	if p == nil {
		return
	}
	if n := p.hits.Add(1); n == p.at {
		if linger > 0 {
			sleep(linger)
		}
		die(name, n)
	}
}

// killSelf announces the failpoint and sends SIGKILL to this process. The
// signal may take a moment to land on every thread; the caller never
// returns meanwhile, so the step after the failpoint cannot happen.
func killSelf(name string, n int64) {
	fmt.Fprintf(os.Stderr, "tpcd: failpoint %s fired (hit %d): SIGKILL\n", name, n)
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	for {
		time.Sleep(time.Hour)
	}
}
