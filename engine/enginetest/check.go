package enginetest

import (
	"cmp"
	"fmt"
	"maps"
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
	// Transactions are named with their cluster: a coordinator that lost
	// its log starts a new one, which hands out the same ids again.
	//
	// decided holds the coordinator's durable commit decisions.
	decided map[TxKey]engine.CoordDecided
	// abortLogged marks transactions with a durable abort decision.
	abortLogged map[TxKey]bool
	// preparedLogged[p] marks transactions with a durable Prepared event at
	// participant p.
	preparedLogged []map[TxKey]bool

	// fates[tx][p] is the data database's last word on tx at p.
	fates map[TxKey][]fateRec
	// preparedWrites marks transactions some participant prepared with
	// writes.
	preparedWrites map[TxKey]bool
	// okWrites[tx][p] are the writing statements the client was told
	// succeeded on p, in order.
	okWrites   map[TxKey][][]string
	toldCommit map[TxKey]bool
	toldAbort  map[TxKey]bool
	begun      map[engine.TxID]bool
	// byDecider marks commit decisions that are a decider's COMMIT;
	// deciderSaidAbort marks transactions whose decider told someone they
	// aborted, after which its branch must never commit.
	byDecider        map[TxKey]bool
	deciderSaidAbort map[TxKey]bool
	// early holds commits that came before the client heard of any
	// statement of their transaction (a transact call is answered once,
	// after its decider committed); its answer checks them.
	early map[TxKey][]earlyCommit
	// transacting marks transactions a transact call runs statements of:
	// their client hears of them only with the call's answer. transacted
	// marks those that had one: the order in which the client heard of
	// their writes is not their order on a participant (a transact call's
	// statements are answered together, after an exec's that ran later).
	transacting    map[TxKey]bool
	transactedCall map[TxKey]bool
	// committedBy finds the transaction that committed each write: the
	// simulation's statements are unique, so a write committed by two
	// transactions ran twice (a call repeated with its key must not).
	committedBy map[string]TxKey
	// keyCommitted finds the transaction that committed under each
	// idempotency key, from the coordinator's durable events (the keys of
	// coord.preparing or coord.ended, a commit in coord.decided or
	// coord.ended): a call repeated with the key must be answered with
	// that commit. txKeys holds the keys coord.preparing named.
	keyCommitted map[string]TxKey
	txKeys       map[TxKey][]string
	// promptAsked holds the decisions that asked for a prompt ack, by
	// transaction, destination and coordinator incarnation: one each at
	// most (a participant of an older release refuses the field, and
	// would refuse every resend that carried it).
	promptAsked map[promptKey]bool
}

type promptKey struct {
	tx    TxKey
	to    engine.NodeID
	epoch engine.Epoch
}

type earlyCommit struct {
	node   engine.NodeID
	writes []string
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
		c:                c,
		decided:          map[TxKey]engine.CoordDecided{},
		abortLogged:      map[TxKey]bool{},
		fates:            map[TxKey][]fateRec{},
		preparedWrites:   map[TxKey]bool{},
		okWrites:         map[TxKey][][]string{},
		toldCommit:       map[TxKey]bool{},
		toldAbort:        map[TxKey]bool{},
		begun:            map[engine.TxID]bool{},
		byDecider:        map[TxKey]bool{},
		deciderSaidAbort: map[TxKey]bool{},
		early:            map[TxKey][]earlyCommit{},
		transacting:      map[TxKey]bool{},
		committedBy:      map[string]TxKey{},
		keyCommitted:     map[string]TxKey{},
		txKeys:           map[TxKey][]string{},
		transactedCall:   map[TxKey]bool{},
		promptAsked:      map[promptKey]bool{},
	}
	for range c.cfg.Participants {
		k.preparedLogged = append(k.preparedLogged, map[TxKey]bool{})
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

// onKeyedAnswer checks the answer to a transact call with an idempotency
// key: once a transaction committed under the key, no call with it may be
// told that its work failed or aborted (a retry may only be told to retry).
func (k *Checker) onKeyedAnswer(key string, reply engine.Reply, err *engine.Error) {
	first, ok := k.keyCommitted[key]
	if !ok {
		return
	}
	switch r := reply.(type) {
	case engine.TransactReply:
		if r.Outcome != nil && *r.Outcome != engine.OutcomeCommit {
			k.failf("a call with key %q was told abort, but tx %s committed under it", key, first)
		}
	}
	if err != nil && err.Code != engine.ErrUnavailable {
		k.failf("a call with key %q was told %q, but tx %s committed under it", key, err.Message, first)
	}
}

// forgetKeys drops what it knows of keys: a replaced coordinator's new
// cluster knows none of them.
func (k *Checker) forgetKeys() { clear(k.keyCommitted) }

func (k *Checker) failf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	k.failures = append(k.failures, msg)
	k.c.tracef("INVARIANT BROKEN: %s", msg)
}

// current names a transaction of the coordinator's cluster as it is now.
func (k *Checker) current(tx engine.TxID) TxKey {
	return TxKey{Cluster: k.c.coord.coord.Cluster(), Tx: tx}
}

// onDurable follows what became durable.
func (k *Checker) onDurable(n *Node, evs []engine.Event) {
	for _, e := range evs {
		switch e := e.(type) {
		case engine.CoordPreparing:
			if len(e.Keys) > 0 {
				k.txKeys[k.current(e.TxID)] = e.Keys
			}
		case engine.CoordEnded:
			if e.Outcome == engine.OutcomeCommit {
				for _, key := range e.Keys {
					k.keyCommitted[key] = k.current(e.TxID)
				}
			}
		case engine.CoordTxIDsReserved:
			k.reserved = max(k.reserved, e.Through)
		case engine.CoordDecided:
			key := k.current(e.TxID)
			if e.Outcome == engine.OutcomeCommit {
				for _, kk := range k.txKeys[key] {
					k.keyCommitted[kk] = key
				}
			}
			_, committed := k.decided[key]
			switch {
			case e.Outcome == engine.OutcomeCommit && k.abortLogged[key],
				e.Outcome == engine.OutcomeAbort && committed:
				k.failf("coordinator logged both commit and abort for tx %s", key)
			case e.Outcome == engine.OutcomeCommit && k.byDecider[key]:
				// The decider's commit was the decision; the coordinator's
				// lazy record of it may list branches whose votes a
				// restart lost (read-only ones among them).
			case e.Outcome == engine.OutcomeCommit:
				k.decided[key] = e
			default:
				k.abortLogged[key] = true
			}
		case engine.PartPrepared:
			k.preparedLogged[n.ID][keyOf(e.GID, e.TxID)] = true
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
		_, committed := k.decided[TxKey{Cluster: m.Cluster, Tx: m.TxID}]
		if m.Outcome == engine.OutcomeCommit && !committed {
			k.failf("commit of tx %d sent to %s before the commit decision was durable", m.TxID, s.To)
		}
		// A presumed abort answers a question about a transaction the
		// coordinator no longer remembers; it may concern a committed one,
		// and the participant must know better (the data checks see if not).
		if m.Outcome == engine.OutcomeAbort && committed && !m.Presumed {
			k.failf("abort of tx %d sent to %s, but commit was logged", m.TxID, s.To)
		}
		if m.PromptAck {
			// Nobody waits for an abort to be applied, nor for an answer
			// to an inquiry.
			if m.Outcome != engine.OutcomeCommit || m.Presumed {
				k.failf("decision %s (presumed %t) of tx %d to %s asks for a prompt ack", m.Outcome, m.Presumed, m.TxID, s.To)
			}
			pk := promptKey{tx: TxKey{Cluster: m.Cluster, Tx: m.TxID}, to: s.To, epoch: m.Epoch}
			if k.promptAsked[pk] {
				k.failf("decision of tx %d to %s asks for a prompt ack again: only its first send may", m.TxID, s.To)
			}
			k.promptAsked[pk] = true
		}
	case engine.VoteMessage:
		if m.Vote == engine.VoteCommitted {
			if _, ok := k.decided[TxKey{Cluster: m.Cluster, Tx: m.TxID}]; !ok {
				k.failf("%s answered committed for tx %d, but its branch did not commit", n.ID, m.TxID)
			}
		}
		if m.Vote == engine.VoteYes && !k.c.cfg.Participant.LazyPrepared && !k.preparedLogged[n.ID][TxKey{Cluster: m.Cluster, Tx: m.TxID}] {
			k.failf("%s voted yes on tx %d before its Prepared event was durable", n.ID, m.TxID)
		}
	case engine.SettleAnswer:
		key := TxKey{Cluster: m.Cluster, Tx: m.TxID}
		_, committed := k.decided[key]
		switch {
		case m.Outcome == engine.OutcomeCommit && !committed:
			k.failf("%s told %s that tx %s committed, but its branch did not", n.ID, s.To, key)
		case m.Outcome == engine.OutcomeAbort && committed:
			k.failf("%s told %s that tx %s aborted, but its branch committed", n.ID, s.To, key)
		case m.Outcome == engine.OutcomeAbort:
			k.deciderSaidAbort[key] = true
		}
	case engine.AckMessage:
		// An abort may be acknowledged for a transaction committed and
		// forgotten long ago (a stale presumed answer); only the commit
		// acknowledgement is a promise the coordinator acts on.
		// (A branch that finished read-only may acknowledge a commit too:
		// a restarted coordinator no longer knows who voted read-only.)
		key := TxKey{Cluster: m.Cluster, Tx: m.TxID}
		if m.Outcome == engine.OutcomeCommit && n.db.commits[key] == 0 && k.fatesOf(key)[n.ID].writes {
			k.failf("%s acknowledged commit of tx %d without committing it", n.ID, m.TxID)
		}
	}
}

// onRequest notes a call as the client makes it.
func (k *Checker) onRequest(r Request) {
	if r.Kind == "transact" && r.Tx != 0 {
		k.transacting[k.current(r.Tx)] = true
	}
}

// onResponse checks an answer at the moment the client gets it.
func (k *Checker) onResponse(r Response) {
	if !r.Lost && r.Key != "" && r.Kind == "transact" {
		k.onKeyedAnswer(r.Key, r.Reply, r.Err)
	}
	if r.Lost || r.Err != nil {
		return
	}
	switch rep := r.Reply.(type) {
	case engine.BeginReply:
		if rep.TxID > k.reserved {
			k.failf("begin answered tx %d before its id was reserved durably", rep.TxID)
		}
		if k.begun[rep.TxID] && !rep.Repeated {
			k.failf("tx id %d handed out twice", rep.TxID)
		}
		k.begun[rep.TxID] = true
	case engine.ExecReply:
		key := k.current(rep.TxID)
		if r.Kind == "direct" {
			// Its id came with a begin's answer, checked then; it may be
			// of a cluster whose coordinator has lost its log since.
			key = TxKey{Cluster: r.Cluster, Tx: rep.TxID}
		} else if rep.TxID > k.reserved {
			k.failf("exec answered for tx %d before its id was reserved durably", rep.TxID)
		}
		if rep.Node != r.Node {
			k.failf("exec on %s answered from %s", r.Node, rep.Node)
		}
		if StatementWrites(r.SQL) && rep.Node >= 0 && int(rep.Node) < k.c.cfg.Participants {
			w := k.okWritesOf(key)
			w[rep.Node] = append(w[rep.Node], r.SQL)
		}
		if r.Kind == "direct" {
			// Answers to statements sent straight to a participant may
			// reach the client in another order than they ran.
			k.transactedCall[key] = true
		}
		if r.Kind == "execute" {
			// A batch commits with its closing execute, before that
			// execute is answered (with the outcome), and several
			// clients' executes share it in no order the checker knows.
			k.transactedCall[key] = true
			k.transacting[key] = rep.Outcome == nil
			if rep.Outcome != nil {
				k.checkEarly(key)
			}
		}
		if rep.Outcome != nil {
			k.told(key, *rep.Outcome, r.Kind)
		}
	case engine.OutcomeReply:
		k.told(k.current(rep.TxID), rep.Outcome, r.Kind)
	case engine.TransactReply:
		k.transacted(r, rep)
	case engine.StatusReply:
		if rep.Outcome != 0 {
			k.told(k.current(rep.TxID), rep.Outcome, "status")
		}
	}
}

// transacted records what a transact call's client was told: the writes
// of the statements that answered (all of them when it committed, which
// only a transaction whose every statement ran does), then the outcome.
// Commits that came before the answer are checked against it now.
func (k *Checker) transacted(r Response, rep engine.TransactReply) {
	key := k.current(rep.TxID)
	if rep.TxID > k.reserved {
		k.failf("transact answered tx %d before its id was reserved durably", rep.TxID)
	}
	committed := rep.Outcome != nil && *rep.Outcome == engine.OutcomeCommit
	w := k.okWritesOf(key)
	// A repeated call's statements are the first call's: heard of once
	// (here, if the first call's answer was lost).
	heard := rep.Repeated && k.transactedCall[key]
	for i, s := range r.Stmts {
		if heard {
			break
		}
		ran := i < len(rep.Results) && rep.Results[i] != nil
		if (ran || committed) && StatementWrites(s.SQL) && s.Node >= 0 && int(s.Node) < len(w) {
			w[s.Node] = append(w[s.Node], s.SQL)
		}
	}
	k.transactedCall[key] = true
	k.checkEarly(key)
	if rep.Outcome != nil {
		k.told(key, *rep.Outcome, "transact")
	}
}

// checkEarly checks the commits of key that came before the call that
// ran them was answered, now that the client heard of its writes.
func (k *Checker) checkEarly(key TxKey) {
	w := k.okWritesOf(key)
	for _, e := range k.early[key] {
		if !k.sameWrites(key, e.writes, w[e.node]) {
			k.failf("%s committed tx %s with writes %q, but the call that ran it was told of %q", e.node, key, e.writes, w[e.node])
		}
	}
	delete(k.early, key)
	delete(k.transacting, key)
}

// sameWrites compares committed writes with those the client heard of, in
// order unless a transact call made the order the client heard in differ.
func (k *Checker) sameWrites(key TxKey, got, want []string) bool {
	if k.transactedCall[key] {
		return slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want)))
	}
	return slices.Equal(got, want)
}

func (k *Checker) okWritesOf(tx TxKey) [][]string {
	w := k.okWrites[tx]
	if w == nil {
		w = make([][]string, k.c.cfg.Participants)
		k.okWrites[tx] = w
	}
	return w
}

func (k *Checker) fatesOf(tx TxKey) []fateRec {
	f := k.fates[tx]
	if f == nil {
		f = make([]fateRec, k.c.cfg.Participants)
		k.fates[tx] = f
	}
	return f
}

// told records an outcome the client heard and checks it against what the
// participants did so far.
func (k *Checker) told(tx TxKey, o engine.Outcome, via string) {
	fates := k.fatesOf(tx)
	switch o {
	case engine.OutcomeCommit:
		// A transaction that wrote nowhere commits without a log record,
		// so after a coordinator crash its outcome may read as aborted;
		// with nothing written, neither answer can be wrong about data.
		if k.toldAbort[tx] && k.preparedWrites[tx] {
			k.failf("client was told abort and then commit (%s) for tx %s", via, tx)
		}
		k.toldCommit[tx] = true
		if _, ok := k.decided[tx]; !ok && k.preparedWrites[tx] {
			k.failf("client was told commit (%s) of tx %s, which has prepared writes but no durable commit decision", via, tx)
		}
	case engine.OutcomeAbort:
		if k.toldCommit[tx] && k.preparedWrites[tx] {
			k.failf("client was told commit and then abort (%s) for tx %s", via, tx)
		}
		k.toldAbort[tx] = true
		for p, f := range fates {
			if f.f == fateCommitted {
				k.failf("client was told abort (%s) of tx %s, but p%d committed it", via, tx, p)
			}
		}
	}
}

// onChanges follows the data databases.
func (k *Checker) onChanges(n *Node, chs []change) {
	p := int(n.ID)
	for _, ch := range chs {
		fates := k.fatesOf(ch.key)
		prev := fates[p]
		writes := len(ch.writes) > 0
		fates[p] = fateRec{f: ch.to, writes: writes, prepared: ch.to == fateAborted && prev.f == fatePrepared}
		switch ch.to {
		case fateOpen:
			// (The fate before this change, not the database now: a
			// statement and its commit report their changes together.)
			if prev.f == fateCommitted {
				k.failf("%s reopened tx %s after committing it (a late duplicate statement ran again)", n.ID, ch.key)
			}
		case fatePrepared:
			if writes {
				k.preparedWrites[ch.key] = true
			}
		case fateReadOnly:
			if writes {
				k.failf("%s committed tx %s without two-phase commit (read-only vote for a transaction that wrote)", n.ID, ch.key)
			}
		case fateCommitted:
			if ch.decider {
				k.onDecision(n, ch)
			}
			k.onCommit(n, ch)
		case fateSettledAborted:
			// Not a fate of the branch itself: the outcome is final.
			fates[p] = prev
			continue
		case fateAborted:
			if !writes {
				continue
			}
			d, decided := k.decided[ch.key]
			switch {
			case prev.f == fatePrepared && n.db.commits[ch.key] == 0:
				for q, f := range fates {
					if f.f == fateCommitted {
						k.failf("tx %s committed on p%d but rolled back on %s", ch.key, q, n.ID)
					}
				}
				if decided && slices.Contains(d.Participants, n.ID) {
					k.failf("%s rolled back tx %s, whose commit was logged with it as participant", n.ID, ch.key)
				}
				if k.toldCommit[ch.key] {
					k.failf("client was told commit of tx %s, but %s rolled it back", ch.key, n.ID)
				}
			case decided && slices.Contains(d.Participants, n.ID) && k.c.Node(n.ID).db.commits[ch.key] == 0:
				k.failf("%s lost the work of tx %s before committing it, but commit was logged with it as participant", n.ID, ch.key)
			}
		}
	}
}

// onDecision checks a decider's COMMIT, which decides its transaction:
// every other branch that wrote must be prepared by then, and nobody may
// have been told it aborted.
func (k *Checker) onDecision(n *Node, ch change) {
	if k.deciderSaidAbort[ch.key] {
		k.failf("%s, the decider, committed tx %s after saying it aborted", n.ID, ch.key)
	}
	if e, ok := k.decided[ch.key]; ok {
		k.failf("%s, the decider, committed tx %s, already decided (%v)", n.ID, ch.key, e.Participants)
		return
	}
	d := engine.CoordDecided{TxID: ch.key.Tx, Outcome: engine.OutcomeCommit}
	for q, f := range k.fatesOf(ch.key) {
		switch {
		case q == int(n.ID):
		case f.f == fatePrepared:
			d.Participants = append(d.Participants, engine.NodeID(q))
		case f.writes && f.f != fateReadOnly:
			k.failf("%s, the decider, committed tx %s while the writes on p%d are %s, not prepared", n.ID, ch.key, q, f.f)
		}
	}
	d.Participants = append(d.Participants, n.ID)
	k.decided[ch.key] = d
	k.byDecider[ch.key] = true
}

func (k *Checker) onCommit(n *Node, ch change) {
	d, decided := k.decided[ch.key]
	switch {
	case !decided:
		k.failf("%s committed tx %s before the coordinator's commit decision was durable", n.ID, ch.key)
	case !slices.Contains(d.Participants, n.ID):
		k.failf("%s committed tx %s, but the commit decision does not list it", n.ID, ch.key)
	}
	if c := n.db.commits[ch.key]; c > 1 {
		k.failf("%s committed tx %s %d times", n.ID, ch.key, c)
	}
	for _, w := range ch.writes {
		wk := ch.key.Cluster + "/" + w
		if first, ok := k.committedBy[wk]; ok && first != ch.key {
			k.failf("%s committed %q in tx %s, which tx %s committed already: a call ran twice", n.ID, w, ch.key, first)
		}
		k.committedBy[wk] = ch.key
	}
	if k.toldAbort[ch.key] {
		k.failf("%s committed tx %s, but the client was told abort", n.ID, ch.key)
	}
	for q, f := range k.fatesOf(ch.key) {
		if q == int(n.ID) || f.f != fateAborted || !f.writes || k.c.parts[q].db.commits[ch.key] > 0 {
			continue
		}
		// Rolled-back work elsewhere conflicts if it was prepared, or if
		// the decision counts on that participant; an earlier open attempt
		// lost in a crash is legitimately redone.
		if f.prepared || slices.Contains(d.Participants, engine.NodeID(q)) {
			k.failf("tx %s committed on %s but its work on p%d is gone", ch.key, n.ID, q)
		}
	}
	w := k.okWrites[ch.key]
	if w == nil || k.transacting[ch.key] {
		k.early[ch.key] = append(k.early[ch.key], earlyCommit{node: n.ID, writes: ch.writes})
		return
	}
	if want := w[n.ID]; !k.sameWrites(ch.key, ch.writes, want) {
		k.failf("%s committed tx %s with writes %q, but the client was told of %q", n.ID, ch.key, ch.writes, want)
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
				k.failf("tx %s: commit was logged, but %s committed it %d times", tx, p, c.parts[p].db.commits[tx])
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
				k.failf("tx %s committed somewhere, but its writes on p%d were rolled back", tx, q)
			}
		}
	}
	for _, tx := range sortedTxs(k.toldCommit) {
		if _, ok := k.decided[tx]; !ok && k.preparedWrites[tx] {
			k.failf("client was told commit of tx %s, which was never logged", tx)
		}
	}
}

func sortedTxs[V any](m map[TxKey]V) []TxKey {
	return slices.SortedFunc(maps.Keys(m), func(a, b TxKey) int {
		return cmp.Or(strings.Compare(a.Cluster, b.Cluster), cmp.Compare(a.Tx, b.Tx))
	})
}
