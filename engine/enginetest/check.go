package enginetest

import (
	"fmt"
	"slices"
	"strings"

	"github.com/tpcd/tpcd/engine"
)

// Checker watches a cluster and records every broken invariant. The
// invariants are stated from outside the engines: they look at durable logs,
// released effects, data databases and client answers, never at engine
// internals.
type Checker struct {
	c        *Cluster
	failures []string

	// reserved is the highest transaction id reserved durably.
	reserved engine.TxID
	// decided holds the coordinator's durable commit decisions.
	decided map[engine.TxID]engine.CoordDecided
	// abortLogged marks transactions with a durable abort decision.
	abortLogged map[engine.TxID]bool
	// preparedLogged[p] marks transactions with a durable Prepared event at
	// participant p.
	preparedLogged []map[engine.TxID]bool

	// fates[tx][p] is the data database's last word on tx at p.
	fates map[engine.TxID][]fateRec
	// preparedWrites marks transactions some participant prepared with
	// writes.
	preparedWrites map[engine.TxID]bool
	// okWrites[tx][p] are the writing statements the client was told
	// succeeded on p, in order.
	okWrites   map[engine.TxID][][]string
	toldCommit map[engine.TxID]bool
	toldAbort  map[engine.TxID]bool
	begun      map[engine.TxID]bool
}

type fateRec struct {
	f      fate
	writes bool
	// prepared marks a rollback of prepared work, which no later attempt
	// at the same participant can have superseded while it stands.
	prepared bool
}

func newChecker(c *Cluster) *Checker {
	k := &Checker{
		c:              c,
		decided:        map[engine.TxID]engine.CoordDecided{},
		abortLogged:    map[engine.TxID]bool{},
		fates:          map[engine.TxID][]fateRec{},
		preparedWrites: map[engine.TxID]bool{},
		okWrites:       map[engine.TxID][][]string{},
		toldCommit:     map[engine.TxID]bool{},
		toldAbort:      map[engine.TxID]bool{},
		begun:          map[engine.TxID]bool{},
	}
	for range c.cfg.Participants {
		k.preparedLogged = append(k.preparedLogged, map[engine.TxID]bool{})
	}
	return k
}

// Failures lists the invariants broken so far, in the order noticed.
func (k *Checker) Failures() []string { return k.failures }

// Err returns the broken invariants as one error, nil if none.
func (k *Checker) Err() error {
	if len(k.failures) == 0 {
		return nil
	}
	return fmt.Errorf("%s", strings.Join(k.failures, "\n"))
}

func (k *Checker) failf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	k.failures = append(k.failures, msg)
	k.c.tracef("INVARIANT BROKEN: %s", msg)
}

// onDurable follows what became durable.
func (k *Checker) onDurable(n *Node, evs []engine.Event) {
	for _, e := range evs {
		switch e := e.(type) {
		case engine.CoordTxIDsReserved:
			k.reserved = max(k.reserved, e.Through)
		case engine.CoordDecided:
			_, committed := k.decided[e.TxID]
			switch {
			case e.Outcome == engine.OutcomeCommit && k.abortLogged[e.TxID],
				e.Outcome == engine.OutcomeAbort && committed:
				k.failf("coordinator logged both commit and abort for tx %d", e.TxID)
			case e.Outcome == engine.OutcomeCommit:
				k.decided[e.TxID] = e
			default:
				k.abortLogged[e.TxID] = true
			}
		case engine.PartPrepared:
			k.preparedLogged[n.ID][e.TxID] = true
		case engine.PartViolation:
			k.failf("%s logged a violation: tx %d: %s", n.ID, e.TxID, e.Detail)
		}
	}
}

// onSend checks a message at the moment it leaves its node.
func (k *Checker) onSend(n *Node, s engine.Send) {
	switch m := s.Msg.(type) {
	case engine.ExecRequest:
		if m.TxID > k.reserved {
			k.failf("exec for tx %d sent before its id was reserved durably (reserved through %d)", m.TxID, k.reserved)
		}
	case engine.DecisionRequest:
		_, committed := k.decided[m.TxID]
		if m.Outcome == engine.OutcomeCommit && !committed {
			k.failf("commit of tx %d sent to %s before the commit decision was durable", m.TxID, s.To)
		}
		// A presumed abort answers a question about a transaction the
		// coordinator no longer remembers; it may concern a committed one,
		// and the participant must know better (the data checks see if not).
		if m.Outcome == engine.OutcomeAbort && committed && !m.Presumed {
			k.failf("abort of tx %d sent to %s, but commit was logged", m.TxID, s.To)
		}
	case engine.VoteMessage:
		if m.Vote == engine.VoteYes && !k.c.cfg.Participant.LazyPrepared && !k.preparedLogged[n.ID][m.TxID] {
			k.failf("%s voted yes on tx %d before its Prepared event was durable", n.ID, m.TxID)
		}
	case engine.AckMessage:
		// An abort may be acknowledged for a transaction committed and
		// forgotten long ago (a stale presumed answer); only the commit
		// acknowledgement is a promise the coordinator acts on.
		if m.Outcome == engine.OutcomeCommit && n.db.commits[m.TxID] == 0 {
			k.failf("%s acknowledged commit of tx %d without committing it", n.ID, m.TxID)
		}
	}
}

// onResponse checks an answer at the moment the client gets it.
func (k *Checker) onResponse(r Response) {
	if r.Lost || r.Err != nil {
		return
	}
	switch rep := r.Reply.(type) {
	case engine.BeginReply:
		if rep.TxID > k.reserved {
			k.failf("begin answered tx %d before its id was reserved durably", rep.TxID)
		}
		if k.begun[rep.TxID] {
			k.failf("tx id %d handed out twice", rep.TxID)
		}
		k.begun[rep.TxID] = true
	case engine.ExecReply:
		if rep.TxID > k.reserved {
			k.failf("exec answered for tx %d before its id was reserved durably", rep.TxID)
		}
		if rep.Node != r.Node {
			k.failf("exec on %s answered from %s", r.Node, rep.Node)
		}
		if StatementWrites(r.SQL) && rep.Node >= 0 && int(rep.Node) < k.c.cfg.Participants {
			w := k.okWritesOf(rep.TxID)
			w[rep.Node] = append(w[rep.Node], r.SQL)
		}
	case engine.OutcomeReply:
		k.told(rep.TxID, rep.Outcome, r.Kind)
	case engine.StatusReply:
		if rep.Outcome != 0 {
			k.told(rep.TxID, rep.Outcome, "status")
		}
	}
}

func (k *Checker) okWritesOf(tx engine.TxID) [][]string {
	w := k.okWrites[tx]
	if w == nil {
		w = make([][]string, k.c.cfg.Participants)
		k.okWrites[tx] = w
	}
	return w
}

func (k *Checker) fatesOf(tx engine.TxID) []fateRec {
	f := k.fates[tx]
	if f == nil {
		f = make([]fateRec, k.c.cfg.Participants)
		k.fates[tx] = f
	}
	return f
}

// told records an outcome the client heard and checks it against what the
// participants did so far.
func (k *Checker) told(tx engine.TxID, o engine.Outcome, via string) {
	fates := k.fatesOf(tx)
	switch o {
	case engine.OutcomeCommit:
		// A transaction that wrote nowhere commits without a log record,
		// so after a coordinator crash its outcome may read as aborted;
		// with nothing written, neither answer can be wrong about data.
		if k.toldAbort[tx] && k.preparedWrites[tx] {
			k.failf("client was told abort and then commit (%s) for tx %d", via, tx)
		}
		k.toldCommit[tx] = true
		if _, ok := k.decided[tx]; !ok && k.preparedWrites[tx] {
			k.failf("client was told commit (%s) of tx %d, which has prepared writes but no durable commit decision", via, tx)
		}
	case engine.OutcomeAbort:
		if k.toldCommit[tx] && k.preparedWrites[tx] {
			k.failf("client was told commit and then abort (%s) for tx %d", via, tx)
		}
		k.toldAbort[tx] = true
		for p, f := range fates {
			if f.f == fateCommitted {
				k.failf("client was told abort (%s) of tx %d, but p%d committed it", via, tx, p)
			}
		}
	}
}

// onChanges follows the data databases.
func (k *Checker) onChanges(n *Node, chs []change) {
	p := int(n.ID)
	for _, ch := range chs {
		fates := k.fatesOf(ch.tx)
		prev := fates[p]
		writes := len(ch.writes) > 0
		fates[p] = fateRec{f: ch.to, writes: writes, prepared: ch.to == fateAborted && prev.f == fatePrepared}
		switch ch.to {
		case fateOpen:
			if n.db.commits[ch.tx] > 0 {
				k.failf("%s reopened tx %d after committing it (a late duplicate statement ran again)", n.ID, ch.tx)
			}
		case fatePrepared:
			if writes {
				k.preparedWrites[ch.tx] = true
			}
		case fateReadOnly:
			if writes {
				k.failf("%s committed tx %d without two-phase commit (read-only vote for a transaction that wrote)", n.ID, ch.tx)
			}
		case fateCommitted:
			k.onCommit(n, ch)
		case fateAborted:
			if !writes {
				continue
			}
			d, decided := k.decided[ch.tx]
			switch {
			case prev.f == fatePrepared && n.db.commits[ch.tx] == 0:
				for q, f := range fates {
					if f.f == fateCommitted {
						k.failf("tx %d committed on p%d but rolled back on %s", ch.tx, q, n.ID)
					}
				}
				if decided && slices.Contains(d.Participants, n.ID) {
					k.failf("%s rolled back tx %d, whose commit was logged with it as participant", n.ID, ch.tx)
				}
				if k.toldCommit[ch.tx] {
					k.failf("client was told commit of tx %d, but %s rolled it back", ch.tx, n.ID)
				}
			case decided && slices.Contains(d.Participants, n.ID) && k.c.Node(n.ID).db.commits[ch.tx] == 0:
				k.failf("%s lost the work of tx %d before committing it, but commit was logged with it as participant", n.ID, ch.tx)
			}
		}
	}
}

func (k *Checker) onCommit(n *Node, ch change) {
	d, decided := k.decided[ch.tx]
	switch {
	case !decided:
		k.failf("%s committed tx %d before the coordinator's commit decision was durable", n.ID, ch.tx)
	case !slices.Contains(d.Participants, n.ID):
		k.failf("%s committed tx %d, but the commit decision does not list it", n.ID, ch.tx)
	}
	if c := n.db.commits[ch.tx]; c > 1 {
		k.failf("%s committed tx %d %d times", n.ID, ch.tx, c)
	}
	if k.toldAbort[ch.tx] {
		k.failf("%s committed tx %d, but the client was told abort", n.ID, ch.tx)
	}
	for q, f := range k.fatesOf(ch.tx) {
		if q == int(n.ID) || f.f != fateAborted || !f.writes || k.c.parts[q].db.commits[ch.tx] > 0 {
			continue
		}
		// Rolled-back work elsewhere conflicts if it was prepared, or if
		// the decision counts on that participant; an earlier open attempt
		// lost in a crash is legitimately redone.
		if f.prepared || slices.Contains(d.Participants, engine.NodeID(q)) {
			k.failf("tx %d committed on %s but its work on p%d is gone", ch.tx, n.ID, q)
		}
	}
	var want []string
	if w := k.okWrites[ch.tx]; w != nil {
		want = w[n.ID]
	}
	if !slices.Equal(ch.writes, want) {
		k.failf("%s committed tx %d with writes %q, but the client was told of %q", n.ID, ch.tx, ch.writes, want)
	}
}

// CheckQuiet checks the end state after a fault-free quiet period: every
// transaction ended everywhere, nothing prepared or open is left, and every
// commit reached every participant that voted for it.
func (k *Checker) CheckQuiet() {
	c := k.c
	if !c.Quiet() {
		k.failf("cluster is not quiet: %d messages in flight", len(c.net))
	}
	if txs := c.coord.coord.Transactions(); len(txs) > 0 {
		k.failf("coordinator still has %d transactions, first: %s", len(txs), engine.DescribeStatus(txs[0].StatusReply))
	}
	for _, n := range c.parts {
		if txs := n.part.Transactions(); len(txs) > 0 {
			k.failf("%s still has %d transactions, first: tx %d %s %s", n.ID, len(txs), txs[0].TxID, txs[0].Phase, txs[0].Reason)
		}
		if d := n.part.MarkerDeletions(); d > 0 {
			k.failf("%s still deletes the markers of %d transactions", n.ID, d)
		}
		if g := n.db.PreparedGIDs(); len(g) > 0 {
			k.failf("%s still has prepared transactions %v", n.ID, g)
		}
		if o := n.db.OpenTxs(); len(o) > 0 {
			k.failf("%s still has open data transactions %v", n.ID, o)
		}
		if m := n.db.Markers(); len(m) > 0 {
			k.failf("%s still has outcome markers %v", n.ID, m)
		}
	}
	for _, tx := range sortedTxs(k.decided) {
		for _, p := range k.decided[tx].Participants {
			if c.parts[p].db.commits[tx] != 1 {
				k.failf("tx %d: commit was logged, but %s committed it %d times", tx, p, c.parts[p].db.commits[tx])
			}
		}
	}
	for _, tx := range sortedTxs(k.fates) {
		committed := false
		for _, n := range c.parts {
			committed = committed || n.db.commits[tx] > 0
		}
		for q, f := range k.fates[tx] {
			if committed && f.f == fateAborted && f.writes && c.parts[q].db.commits[tx] == 0 {
				k.failf("tx %d committed somewhere, but its writes on p%d were rolled back", tx, q)
			}
		}
	}
	for _, tx := range sortedTxs(k.toldCommit) {
		if _, ok := k.decided[tx]; !ok && k.preparedWrites[tx] {
			k.failf("client was told commit of tx %d, which was never logged", tx)
		}
	}
}

func sortedTxs[V any](m map[engine.TxID]V) []engine.TxID {
	out := make([]engine.TxID, 0, len(m))
	for id := range m {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}
