package engine

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// The Describe functions render events, messages, effects and state as one
// stable line each, for golden files and operator output. They never include
// times or anything else that varies between runs.

// DescribeEvent renders an event as "kind field=value ...".
func DescribeEvent(e Event) string {
	switch e := e.(type) {
	case CoordStarted:
		return fmt.Sprintf("%s cluster=%s epoch=%d", e.Kind(), e.Cluster, e.Epoch)
	case CoordTxIDsReserved:
		return fmt.Sprintf("%s through=%d", e.Kind(), e.Through)
	case CoordPreparing:
		return fmt.Sprintf("%s tx=%d epoch=%d participants=%s%s%s", e.Kind(), e.TxID, e.Epoch, nodeList(e.Participants), decider(e.Decider), keyList(e.Keys))
	case CoordDecided:
		return fmt.Sprintf("%s tx=%d epoch=%d outcome=%s participants=%s%s", e.Kind(), e.TxID, e.Epoch, e.Outcome, nodeList(e.Participants), reason(e.Reason))
	case CoordEnded:
		s := fmt.Sprintf("%s tx=%d", e.Kind(), e.TxID)
		if e.Outcome != 0 {
			s += " outcome=" + e.Outcome.String()
		}
		return s + keyList(e.Keys) + reason(e.Reason)
	case PartEpochSeen:
		s := fmt.Sprintf("%s cluster=%s epoch=%d", e.Kind(), e.Cluster, e.Epoch)
		if len(e.Participants) > 0 {
			s += " participants=" + strings.Join(e.Participants, ",")
		}
		return s
	case PartPrepared:
		s := fmt.Sprintf("%s tx=%d gid=%s", e.Kind(), e.TxID, e.GID)
		if e.Xid != 0 {
			s += fmt.Sprintf(" xid=%d", e.Xid)
		}
		return s
	case PartVotedNo:
		return fmt.Sprintf("%s tx=%d%s", e.Kind(), e.TxID, reason(e.Reason))
	case PartCommitted:
		return fmt.Sprintf("%s tx=%d gid=%s", e.Kind(), e.TxID, e.GID)
	case PartAborted:
		return fmt.Sprintf("%s tx=%d gid=%s%s", e.Kind(), e.TxID, e.GID, reason(e.Reason))
	case PartForgotten:
		return fmt.Sprintf("%s tx=%d", e.Kind(), e.TxID)
	case PartViolation:
		return fmt.Sprintf("%s tx=%d detail=%q", e.Kind(), e.TxID, e.Detail)
	}
	return fmt.Sprintf("%T", e)
}

// DescribeMessage renders a message as "method field=value ...".
func DescribeMessage(m Message) string {
	switch m := m.(type) {
	case ExecRequest:
		s := fmt.Sprintf("%s epoch=%d tx=%d stmt=%d sql=%q", m.Method(), m.Epoch, m.TxID, m.Stmt, m.SQL)
		if len(m.Args) > 0 {
			s += fmt.Sprintf(" args=%v", m.Args)
		}
		if len(m.ParamTypes) > 0 {
			s += fmt.Sprintf(" param-types=%v", m.ParamTypes)
		}
		if m.Then != ThenNothing {
			s += " then=" + m.Then.String() + decider(m.Decider) + keyList(m.Keys)
		}
		if m.VoteToDecider {
			s += " vote-to-decider"
		}
		if m.Direct {
			s += " direct"
		}
		return s
	case PrepareRequest:
		s := fmt.Sprintf("%s epoch=%d tx=%d stmts=%d%s", m.Method(), m.Epoch, m.TxID, m.Stmts, decider(m.Decider))
		if m.VoteToDecider {
			s += " vote-to-decider"
		}
		return s
	case CommitBranchRequest:
		s := fmt.Sprintf("%s epoch=%d tx=%d stmts=%d%s", m.Method(), m.Epoch, m.TxID, m.Stmts, keyList(m.Keys))
		if len(m.Voters) > 0 {
			s += " voters=" + nodeList(m.Voters)
		}
		return s
	case ReconcileRequest:
		return fmt.Sprintf("%s epoch=%d", m.Method(), m.Epoch)
	case ReconcileAnswer:
		s := fmt.Sprintf("%s from=%s epoch=%d", m.Method(), m.From, m.Epoch)
		for _, mk := range m.Markers {
			s += fmt.Sprintf(" [tx=%d epoch=%d%s]", mk.TxID, mk.TxEpoch, keyList(mk.Keys))
		}
		return s
	case SettleRequest:
		return fmt.Sprintf("%s from=%s tx=%d", m.Method(), m.From, m.TxID)
	case SettleAnswer:
		s := fmt.Sprintf("%s from=%s tx=%d outcome=%s", m.Method(), m.From, m.TxID, m.Outcome) + voterResults(m.Results)
		if m.Reason != "" {
			s += fmt.Sprintf(" reason=%q", m.Reason)
		}
		return s
	case DecisionRequest:
		s := fmt.Sprintf("%s epoch=%d tx=%d outcome=%s", m.Method(), m.Epoch, m.TxID, m.Outcome)
		if m.Presumed {
			s += " presumed"
		}
		if m.PromptAck {
			s += " prompt-ack"
		}
		return s
	case ExecResult:
		s := fmt.Sprintf("%s from=%s tx=%d stmt=%d", m.Method(), m.From, m.TxID, m.Stmt)
		if m.Err != "" {
			return s + fmt.Sprintf(" error=%q", m.Err)
		}
		if m.Result != nil {
			s += " rows_affected=" + strconv.FormatInt(m.Result.RowsAffected, 10)
		}
		return s
	case VoteMessage:
		s := fmt.Sprintf("%s from=%s tx=%d vote=%s%s", m.Method(), m.From, m.TxID, m.Vote, reason(m.Reason))
		if m.TxEpoch != 0 {
			s += fmt.Sprintf(" epoch=%d", m.TxEpoch)
		}
		if m.Result != nil {
			s += fmt.Sprintf(" stmt=%d", m.Stmt)
		}
		return s + voterResults(m.Results)
	case AckMessage:
		s := fmt.Sprintf("%s from=%s tx=%d outcome=%s", m.Method(), m.From, m.TxID, m.Outcome)
		if m.Prompt {
			s += " prompt"
		}
		return s
	case InquireMessage:
		return fmt.Sprintf("%s from=%s tx=%d", m.Method(), m.From, m.TxID)
	}
	return fmt.Sprintf("%T", m)
}

// voterResults renders the votes a decider hands on.
func voterResults(rs []VoterResult) string {
	s := ""
	for _, r := range rs {
		if r.Result == nil {
			s += fmt.Sprintf(" [%s %s]", r.Node, r.Vote)
			continue
		}
		s += fmt.Sprintf(" [%s %s stmt=%d]", r.Node, r.Vote, r.Stmt)
	}
	return s
}

// DescribeEffect renders an effect on one line; "after=N" shows its WaitLSN.
func DescribeEffect(e Effect) string {
	after := ""
	if e.After() != 0 {
		after = fmt.Sprintf(" after=%d", e.After())
	}
	switch e := e.(type) {
	case Send:
		return fmt.Sprintf("send to=%s %s%s", e.To, DescribeMessage(e.Msg), after)
	case Respond:
		if e.Err != nil {
			return fmt.Sprintf("respond req=%d error=%q (%s)%s", e.Req, e.Err.Message, e.Err.Code, after)
		}
		return fmt.Sprintf("respond req=%d %s%s", e.Req, describeReply(e.Reply), after)
	case Data:
		s := fmt.Sprintf("data %s tx=%d", e.Op, e.TxID)
		if e.Op == DataExec {
			s += fmt.Sprintf(" stmt=%d sql=%q", e.Stmt, e.SQL)
			if e.Then != 0 {
				s += fmt.Sprintf(" then=%s gid=%s", e.Then, e.GID)
			}
		} else {
			s += " gid=" + e.GID
		}
		s += keyList(e.Keys)
		if e.Xid != 0 {
			s += fmt.Sprintf(" xid=%d", e.Xid)
		}
		return s + after
	case Violation:
		return fmt.Sprintf("VIOLATION tx=%d %s", e.TxID, e.Detail)
	case Forget:
		return fmt.Sprintf("forget tx=%d%s", e.TxID, after)
	case AskCoordinator:
		return "ask coordinator who it is"
	case LookupKey:
		return fmt.Sprintf("look up key %q%s", e.Key, after)
	case Warning:
		return "WARNING " + e.Detail
	}
	return fmt.Sprintf("%T", e)
}

func describeReply(r Reply) string {
	switch r := r.(type) {
	case BeginReply:
		return fmt.Sprintf("begin tx=%d%s", r.TxID, repeated(r.Repeated))
	case ExecReply:
		s := fmt.Sprintf("exec tx=%d node=%s", r.TxID, r.Node)
		if r.Result != nil {
			s += " rows_affected=" + strconv.FormatInt(r.Result.RowsAffected, 10)
		}
		if r.Outcome != nil {
			s += " " + r.Outcome.String()
		}
		return s + repeated(r.Repeated)
	case OutcomeReply:
		return fmt.Sprintf("outcome tx=%d %s%s", r.TxID, r.Outcome, reason(r.Reason))
	case TransactReply:
		s := fmt.Sprintf("transact tx=%d results=%d", r.TxID, len(r.Results))
		missing := 0
		for _, res := range r.Results {
			if res == nil {
				missing++
			}
		}
		if missing > 0 {
			s += fmt.Sprintf(" (%d missing)", missing)
		}
		if r.Outcome != nil {
			s += " " + r.Outcome.String()
		}
		return s + repeated(r.Repeated) + reason(r.Reason)
	case StatusReply:
		return "status " + DescribeStatus(r)
	}
	return fmt.Sprintf("%T", r)
}

func repeated(r bool) string {
	if r {
		return " repeated"
	}
	return ""
}

func keyList(keys []string) string {
	if len(keys) == 0 {
		return ""
	}
	q := make([]string, len(keys))
	for i, k := range keys {
		q[i] = strconv.Quote(k)
	}
	return " keys=" + strings.Join(q, ",")
}

// DescribeStatus renders a status reply on one line.
func DescribeStatus(s StatusReply) string {
	out := fmt.Sprintf("tx=%d state=%s", s.TxID, s.State)
	if s.Key != "" {
		out += " key=" + strconv.Quote(s.Key)
	}
	if len(s.Participants) > 0 {
		out += " participants=" + nodeList(s.Participants)
	}
	if len(s.Pending) > 0 {
		out += " pending=" + nodeList(s.Pending)
	}
	if s.Applied {
		out += " applied"
	}
	return out + reason(s.Reason)
}

// DescribeReady renders a step's output, one event or effect per line.
func DescribeReady(rd Ready) string {
	var b strings.Builder
	for i, e := range rd.Events {
		fmt.Fprintf(&b, "log %d: %s\n", rd.FirstLSN+LSN(i), DescribeEvent(e))
	}
	for _, e := range rd.Effects {
		b.WriteString(DescribeEffect(e))
		b.WriteByte('\n')
	}
	return b.String()
}

// Describe renders the coordinator's state, one transaction per line.
func (c *Coordinator) Describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "coordinator cluster=%s epoch=%d next-tx=%d reserved=%d\n", c.cluster, c.epoch, c.nextTx, c.reserved)
	for _, id := range c.sortedTxIDs() {
		tx := c.txs[id]
		fmt.Fprintf(&b, "  tx %d %s", id, tx.phase)
		if tx.decider != CoordinatorNode {
			fmt.Fprintf(&b, " decider=%s", tx.decider)
		}
		for i, n := range tx.nodes {
			if !n.touched {
				continue
			}
			fmt.Fprintf(&b, " %s[stmts=%d", NodeID(i), n.sent)
			if n.vote != 0 {
				fmt.Fprintf(&b, " vote=%s", n.vote)
			}
			if NodeID(i) == tx.decider && tx.branchAsked {
				b.WriteString(" asked")
			}
			if n.inPhase2 {
				fmt.Fprintf(&b, " acked=%t", n.acked)
			}
			b.WriteString("]")
		}
		if tx.abortOnly != "" {
			fmt.Fprintf(&b, " abort-only=%q", tx.abortOnly)
		}
		b.WriteString(reason(tx.reason))
		b.WriteByte('\n')
	}
	if len(c.ended) > 0 {
		var parts []string
		for _, e := range c.ended {
			parts = append(parts, fmt.Sprintf("%d:%s", e.id, e.outcome))
		}
		fmt.Fprintf(&b, "  ended %s\n", strings.Join(parts, " "))
	}
	return b.String()
}

// Describe renders the participant's state, one transaction per line.
func (p *Participant) Describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "participant %s cluster=%s epoch=%d violations=%d\n", p.cfg.Node, p.cluster, p.epoch, p.violations)
	if p.joining != nil {
		fmt.Fprintf(&b, "  joining cluster=%s epoch=%d\n", p.joining.Cluster, p.joining.Epoch)
	}
	if len(p.held) > 0 {
		fmt.Fprintf(&b, "  held %d messages\n", len(p.held))
	}
	for _, id := range p.sortedTxIDs() {
		tx := p.txs[id]
		fmt.Fprintf(&b, "  tx %d %s stmts=%d%s\n", id, tx.phase, tx.nextStmt, reason(tx.reason))
	}
	if len(p.deleting) > 0 {
		fmt.Fprintf(&b, "  deleting markers of %v\n", slices.Sorted(maps.Keys(p.deleting)))
	}
	if len(p.kept) > 0 {
		var parts []string
		for _, id := range slices.Sorted(maps.Keys(p.kept)) {
			what := "marker"
			if p.kept[id].tombstone {
				what = "tombstone"
			}
			parts = append(parts, fmt.Sprintf("%d:%s", id, what))
		}
		fmt.Fprintf(&b, "  deciding for %s\n", strings.Join(parts, " "))
	}
	if len(p.settles) > 0 {
		fmt.Fprintf(&b, "  settling %v\n", slices.Sorted(maps.Keys(p.settles)))
	}
	return b.String()
}

func decider(d *NodeID) string {
	if d == nil {
		return ""
	}
	return " decider=" + d.String()
}

func nodeList(ns []NodeID) string {
	parts := make([]string, len(ns))
	for i, n := range ns {
		parts[i] = n.String()
	}
	return strings.Join(parts, ",")
}

func reason(r string) string {
	if r == "" {
		return ""
	}
	return fmt.Sprintf(" reason=%q", r)
}
