package chaos

import (
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is what a chaos run found.
type Report struct {
	Seed          uint64
	Participants  int
	Clients       int
	FaultDuration time.Duration // how long faults were injected

	// Client transactions by what the client was told (the harness's own
	// probe transactions are checked too but counted in Probes).
	Attempted, Committed, Aborted, Unknown int
	Probes                                 int
	// BeginFailures are begin calls without an id (coordinator down).
	BeginFailures int
	// BeginRepeats are begins sent again with their key after the first
	// answer was lost.
	BeginRepeats int
	// RolledBack and PlannedFail count transactions ended by the client's
	// rollback and those that sent a statement meant to fail; OneCall
	// those sent in one call, Direct those whose statements went
	// straight to their participants, Plain those of one participant sent
	// to it as a plain transaction (counted in OneCall too).
	RolledBack, PlannedFail, OneCall, Direct, Plain int

	Verdict

	// Faults counts the faults injected, by kind.
	Faults map[string]int
	// Incarnations describes each coordinator of the run, the first and
	// every replacement, in order; ReusedIDs counts the transaction ids
	// that more than one of them issued to the workload.
	Incarnations []Incarnation
	ReusedIDs    int
	// Replacements are the replace-coordinator faults carried out;
	// ReplaceSkipped says why others were not (the cluster was not quiet).
	Replacements   []Replacement
	ReplaceSkipped []string
	// Orphans counts the transactions left open by the coordinator
	// replaced in the middle of a replacement; OrphansMet those of them
	// that hold acknowledged work on a participant and whose id the next
	// coordinator issued again to a transaction that sent statements.
	Orphans, OrphansMet int
	// EmbeddedKills are the kill-embedded-postgres faults and how the
	// coordinator healed after each; one that did not heal in time is a
	// violation too.
	EmbeddedKills []EmbeddedKill
	// Starts and UnexpectedExits count node processes started and those
	// that exited without the harness asking (a node exits when its
	// PostgreSQL is down at start), by node.
	Starts, UnexpectedExits map[string]int
	// ErrorLines counts level=ERROR lines in each node's log.
	ErrorLines map[string]int
	// CoordRecoveries counts coordinator starts that found transactions in
	// flight in its log (CoordInFlight of them in all); PartRecoveries
	// counts participant starts that found in-doubt transactions
	// (PartInDoubt in all). Read from the nodes' "recovered" log lines.
	CoordRecoveries, CoordInFlight int
	PartRecoveries, PartInDoubt    int
	// Coordinators is how many coordinator processes shared the log (1:
	// the coordinator alone); TakeOvers how often one of them took the
	// log's slot, the first start included.
	Coordinators, TakeOvers int
	// Slots is how many of the coordinators served at once (Options.Slots).
	Slots int

	// Reasons are the most frequent reasons of aborts and unknowns, with
	// numbers masked, most frequent first.
	Reasons []ReasonCount

	ProbeAttempts int
	// Quiesced is how long the cluster took, after the faults stopped and
	// everything was restored, to end every transaction.
	Quiesced time.Duration
	// Problems are failures of the run itself (set-up, restore, a cluster
	// that never became quiet); they make the run fail like violations.
	Problems []string
	// Dir is where the servers' data and the node logs were kept, or "".
	Dir string
}

// Incarnation is one coordinator of a run and the transactions it issued
// to the workload.
type Incarnation struct {
	Cluster string
	// Transactions counts the recorded transactions; FirstTx and LastTx
	// are the lowest and highest of their ids.
	Transactions    int
	FirstTx, LastTx uint64
}

// describeIncarnations sums up the records by coordinator incarnation and
// counts the ids issued by more than one.
func describeIncarnations(clusterIDs []string, records []*TxRecord) (out []Incarnation, reused int) {
	out = make([]Incarnation, len(clusterIDs))
	for i, id := range clusterIDs {
		out[i].Cluster = id
	}
	issuers := map[uint64]map[int]bool{}
	for _, r := range records {
		if r.Incarnation < 1 || r.Incarnation > len(out) {
			continue
		}
		inc := &out[r.Incarnation-1]
		if inc.Transactions == 0 || r.TxID < inc.FirstTx {
			inc.FirstTx = r.TxID
		}
		inc.LastTx = max(inc.LastTx, r.TxID)
		inc.Transactions++
		if issuers[r.TxID] == nil {
			issuers[r.TxID] = map[int]bool{}
		}
		issuers[r.TxID][r.Incarnation] = true
	}
	for _, by := range issuers {
		if len(by) > 1 {
			reused++
		}
	}
	return out, reused
}

// countOrphans counts the orphaned transactions, and those with
// acknowledged work whose id the next coordinator incarnation issued again
// to a transaction that sent statements.
func countOrphans(records []*TxRecord) (orphans, met int) {
	sent := map[TxKey]bool{}
	for _, r := range records {
		for _, n := range r.Sent {
			if n > 0 {
				sent[r.Key()] = true
			}
		}
	}
	for _, r := range records {
		if !r.Orphaned {
			continue
		}
		orphans++
		if slices.ContainsFunc(r.Acked, func(n int) bool { return n > 0 }) && sent[TxKey{Incarnation: r.Incarnation + 1, TxID: r.TxID}] {
			met++
		}
	}
	return orphans, met
}

// OK reports whether the run found nothing wrong.
func (r *Report) OK() bool { return len(r.Violations) == 0 && len(r.Problems) == 0 }

// maxListed bounds how many violations Print lists one by one.
const maxListed = 50

// Print writes the report for people.
func (r *Report) Print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "seed\t%d\n", r.Seed)
	coordinators := "coordinator"
	if r.Coordinators > 1 {
		coordinators = fmt.Sprintf("%d coordinators on one log", r.Coordinators)
	}
	if r.Slots > 1 {
		coordinators = fmt.Sprintf("%d coordinators on one log, serving %d slots at once", r.Coordinators, r.Slots)
	}
	fmt.Fprintf(tw, "cluster\t%s + %d participants, %d clients, %v of faults\n", coordinators, r.Participants, r.Clients, r.FaultDuration.Round(time.Second))
	fmt.Fprintf(tw, "transactions\tattempted %d, committed %d, aborted %d, unknown %d (client got no answer)\n", r.Attempted, r.Committed, r.Aborted, r.Unknown)
	fmt.Fprintf(tw, "  of which\t%d rolled back by the client, %d sent a failing statement, %d sent in one call (%d of them plain transactions at their participant), %d sent their statements straight to the participants; %d begin calls failed, %d sent again with their key after a lost answer\n", r.RolledBack, r.PlannedFail, r.OneCall, r.Plain, r.Direct, r.BeginFailures, r.BeginRepeats)
	fmt.Fprintf(tw, "applied\t%d committed on every node they touched, %d on none\n", r.AppliedCommit, r.AppliedAbort)
	fmt.Fprintf(tw, "  unknowns\t%d turned out committed, %d aborted\n", r.UnknownCommit, r.UnknownAbort)
	total := 0
	var parts []string
	for _, k := range FaultKinds() {
		total += r.Faults[k]
		parts = append(parts, fmt.Sprintf("%s %d", k, r.Faults[k]))
	}
	fmt.Fprintf(tw, "faults\t%d: %s\n", total, strings.Join(parts, ", "))
	fmt.Fprintf(tw, "coordinators\t%s\n", r.describeCoordinators())
	if r.Coordinators > 1 {
		fmt.Fprintf(tw, "take-overs\t%d coordinators on one log: a slot taken %d times (the first starts included)\n", r.Coordinators, r.TakeOvers)
	}
	fmt.Fprintf(tw, "replaced\t%s\n", r.describeReplacements())
	fmt.Fprintf(tw, "own postgres\t%s\n", r.describeEmbeddedKills())
	fmt.Fprintf(tw, "node starts\t%s\n", describeCounts(r.Starts))
	fmt.Fprintf(tw, "exits on own\t%s\n", describeCounts(r.UnexpectedExits))
	fmt.Fprintf(tw, "error lines\t%s\n", describeCounts(r.ErrorLines))
	fmt.Fprintf(tw, "restarts\tcoordinator %d times with transactions in flight (%d in all); participants %d times with in-doubt transactions (%d in all)\n",
		r.CoordRecoveries, r.CoordInFlight, r.PartRecoveries, r.PartInDoubt)
	fmt.Fprintf(tw, "recovery\tprobe committed after %d attempt(s); quiet %v after restore (%d probe transactions in all)\n", r.ProbeAttempts, r.Quiesced.Round(100*time.Millisecond), r.Probes)
	fmt.Fprintf(tw, "violations\t%d\n", len(r.Violations))
	tw.Flush()
	if len(r.Reasons) > 0 {
		fmt.Fprintln(w, "most frequent abort and unknown reasons:")
		for _, rc := range r.Reasons {
			fmt.Fprintf(w, "  %6d  %s\n", rc.Count, rc.Reason)
		}
	}
	for i, v := range r.Violations {
		if i == maxListed {
			fmt.Fprintf(w, "  ... and %d more\n", len(r.Violations)-maxListed)
			break
		}
		fmt.Fprintf(w, "  VIOLATION %s\n", v)
	}
	for _, p := range r.Problems {
		fmt.Fprintf(w, "PROBLEM %s\n", p)
	}
	if r.Dir != "" {
		fmt.Fprintf(w, "kept in %s (node logs in logs/, servers in pg/)\n", r.Dir)
	}
}

func (r *Report) describeCoordinators() string {
	var parts []string
	for i, inc := range r.Incarnations {
		id := inc.Cluster
		if len(id) > 8 {
			id = id[:8]
		}
		txs := "no transactions"
		if inc.Transactions > 0 {
			txs = fmt.Sprintf("%d transactions, tx %d-%d", inc.Transactions, inc.FirstTx, inc.LastTx)
		}
		parts = append(parts, fmt.Sprintf("#%d cluster %s (%s)", i+1, id, txs))
	}
	if len(parts) == 0 {
		return "-"
	}
	return fmt.Sprintf("%d: %s; %d tx ids issued by more than one", len(parts), strings.Join(parts, ", "), r.ReusedIDs)
}

func (r *Report) describeReplacements() string {
	var quiet, took, open []string
	for _, rp := range r.Replacements {
		quiet = append(quiet, rp.Quiet.Round(100*time.Millisecond).String())
		took = append(took, rp.Took.Round(100*time.Millisecond).String())
		open = append(open, fmt.Sprint(rp.OpenAtResume))
	}
	s := fmt.Sprintf("%d times, %d skipped (not quiet)", len(r.Replacements), len(r.ReplaceSkipped))
	if len(r.Replacements) > 0 {
		s += fmt.Sprintf("; from the clients' pause: quiet after %s, the new coordinator serving after %s", strings.Join(quiet, ", "), strings.Join(took, ", "))
		s += fmt.Sprintf("; %d transactions left open by the coordinators in between, %d of them with acknowledged work and their ids issued again by the next; open writes on the participants when the clients resumed: %s",
			r.Orphans, r.OrphansMet, strings.Join(open, ", "))
	}
	return s
}

func (r *Report) describeEmbeddedKills() string {
	var ready, commit []string
	for _, k := range r.EmbeddedKills {
		if k.Failure == "" {
			ready = append(ready, k.ReadyAfter.Round(100*time.Millisecond).String())
			commit = append(commit, k.CommitAfter.Round(100*time.Millisecond).String())
		}
	}
	s := fmt.Sprintf("coordinator's killed %d times, healed within %v %d times", len(r.EmbeddedKills), healWithin, len(ready))
	if len(ready) > 0 {
		s += fmt.Sprintf(": ready after %s, committing after %s", strings.Join(ready, ", "), strings.Join(commit, ", "))
	}
	return s
}

func describeCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}

// ReasonCount is how many transactions ended for one reason.
type ReasonCount struct {
	Reason string
	Count  int
}

// maxReasons bounds the reasons a report keeps.
const maxReasons = 8

var digits = regexp.MustCompile(`[0-9]+`)

// topReasons groups the reasons of transactions that were not told commit.
func topReasons(records []*TxRecord) []ReasonCount {
	counts := map[string]int{}
	for _, r := range records {
		if r.Told == ToldCommit || r.Client < 0 {
			continue
		}
		reason := r.Reason
		if reason == "" {
			reason = "(none given)"
		}
		if r.RolledBack {
			reason = "rolled back by the client"
		}
		reason = digits.ReplaceAllString(reason, "N")
		if len(reason) > 160 {
			reason = reason[:160] + "..."
		}
		counts[reason]++
	}
	out := make([]ReasonCount, 0, len(counts))
	for k, v := range counts {
		out = append(out, ReasonCount{k, v})
	}
	slices.SortFunc(out, func(a, b ReasonCount) int {
		if a.Count != b.Count {
			return b.Count - a.Count
		}
		return strings.Compare(a.Reason, b.Reason)
	})
	if len(out) > maxReasons {
		out = out[:maxReasons]
	}
	return out
}
