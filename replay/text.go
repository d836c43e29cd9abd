package replay

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
)

// WriteJSON writes the report as one indented JSON document.
func WriteJSON(w io.Writer, r *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the report for people: stable (no times unless the
// report has them, everything sorted) so it can be diffed and kept as a
// golden file.
func WriteText(w io.Writer, r *Report) error {
	b := bufio.NewWriter(w)
	p := func(indent int, format string, args ...any) {
		b.WriteString(strings.Repeat("  ", indent))
		fmt.Fprintf(b, format, args...)
		b.WriteByte('\n')
	}
	if r.Tx != 0 {
		p(0, "transaction %d", r.Tx)
	}
	if len(r.Nodes) == 0 {
		p(0, "the log is empty: no node has written to it")
	}
	for i, n := range r.Nodes {
		if i > 0 || r.Tx != 0 {
			b.WriteByte('\n')
		}
		writeNode(p, &n, r.Tx != 0)
	}
	if len(r.Notes) > 0 {
		b.WriteByte('\n')
		for _, s := range r.Notes {
			p(0, "note: %s", s)
		}
	}
	b.WriteByte('\n')
	if r.Problems == 0 {
		p(0, "result: consistent")
	} else {
		p(0, "result: %d %s", r.Problems, plural(r.Problems, "problem", "problems"))
	}
	return b.Flush()
}

type printer func(indent int, format string, args ...any)

func writeNode(p printer, n *NodeReport, oneTx bool) {
	head := fmt.Sprintf("%s: cluster=%s epoch=%d events=%d", n.Node, orNone(n.Cluster), n.Epoch, n.Events)
	if c := n.Coordinator; c != nil {
		head += fmt.Sprintf(" incarnations=%d", c.Incarnations)
	}
	p(0, "%s", head)
	if c := n.Coordinator; c != nil {
		parts := fmt.Sprintf("%d participants (given)", c.Participants)
		switch {
		case c.Inferred && c.Participants == 0:
			parts = "no participant named in the log"
		case c.Inferred:
			parts = fmt.Sprintf("participants p0..p%d named in the log", c.Participants-1)
		}
		p(1, "next tx id %d (reserved through %d, highest in the log %d); %s",
			c.NextTx, c.ReservedThrough, c.HighestTx, parts)
	}
	p(1, "states: %s", states(n))

	if oneTx {
		for _, t := range n.Transactions {
			writeTx(p, n, &t)
		}
	} else {
		what := "undecided first"
		if n.Role == RoleParticipant {
			what = "in doubt first"
		}
		if n.InMemory == 0 {
			p(1, "transactions in memory: none")
		} else {
			p(1, "transactions in memory: %d (%s)", n.InMemory, what)
		}
		for _, t := range n.Transactions {
			writeTx(p, n, &t)
		}
		if n.Omitted > 0 {
			p(2, "... and %d more (raise --limit)", n.Omitted)
		}
	}

	if d := n.Data; d != nil {
		p(1, "data database: %d prepared and %d markers of this participant; %d other tpcd GIDs", d.Prepared, d.Markers, d.Foreign)
		for _, g := range d.ForeignGIDs {
			p(2, "other: %s", g)
		}
		if d.Foreign > len(d.ForeignGIDs) {
			p(2, "other: ... and %d more", d.Foreign-len(d.ForeignGIDs))
		}
		if len(d.Findings) == 0 {
			p(2, "matches the log")
		}
		for _, f := range d.Findings {
			label := "ok"
			if f.Problem {
				label = "PROBLEM"
			}
			p(2, "%s %s tx %d gid=%s log=%q prepared=%s marker=%s", label, f.Category, f.Tx, orNone(f.GID), f.Log, yesNo(f.PreparedInDB), yesNo(f.MarkerInDB))
			p(3, "%s", f.Detail)
		}
		for _, s := range n.RestartNotes {
			p(2, "a restart also: %s", s)
		}
		if d.Unconfirmed {
			p(2, "(too many problems to re-check each against the log; on a running participant some may be transactions in flight)")
		}
	}

	if n.Role == RoleParticipant {
		if len(n.Violations) == 0 {
			p(1, "violations: none")
		} else {
			p(1, "violations: %d", len(n.Violations)+n.ViolationsOmitted)
			for _, v := range n.Violations {
				p(2, "PROBLEM tx %d #%d.%d: %s", v.Tx, v.Seq, v.Index, v.Detail)
			}
			if n.ViolationsOmitted > 0 {
				p(2, "... and %d more", n.ViolationsOmitted)
			}
		}
	}
	if len(n.Undecodable) == 0 {
		p(1, "undecodable events: none")
	} else {
		p(1, "undecodable events: %d (a restart of this node stops at the first)", len(n.Undecodable)+n.UndecodableOmitted)
		for _, e := range n.Undecodable {
			p(2, "PROBLEM #%d.%d %s tx %d: %s", e.Seq, e.Index, e.Kind, e.Tx, e.Error)
		}
		if n.UndecodableOmitted > 0 {
			p(2, "... and %d more", n.UndecodableOmitted)
		}
	}
}

func writeTx(p printer, n *NodeReport, t *TxReport) {
	var s strings.Builder
	fmt.Fprintf(&s, "tx %d %s", t.Tx, t.State)
	if t.Epoch != 0 {
		fmt.Fprintf(&s, " epoch=%d", t.Epoch)
	}
	if t.GID != "" {
		fmt.Fprintf(&s, " gid=%s", t.GID)
	}
	if len(t.Participants) > 0 {
		fmt.Fprintf(&s, " participants=%s", nodes(t.Participants))
	}
	if len(t.Pending) > 0 {
		fmt.Fprintf(&s, " pending=%s", nodes(t.Pending))
	}
	if t.Outcome != "" {
		fmt.Fprintf(&s, " outcome=%s", t.Outcome)
	}
	if t.Reason != "" {
		fmt.Fprintf(&s, " reason=%q", t.Reason)
	}
	if t.PreparedInDB != nil {
		fmt.Fprintf(&s, " prepared-in-db=%s marker-in-db=%s", yesNo(*t.PreparedInDB), yesNo(*t.MarkerInDB))
	}
	if t.InDoubt {
		if n.Role == RoleCoordinator {
			s.WriteString(" [undecided: a restart aborts it]")
		} else {
			s.WriteString(" [in doubt: a restart asks the coordinator]")
		}
	}
	p(2, "%s", s.String())
	if t.EarlierEvents > 0 {
		p(3, "(%d earlier %s)", t.EarlierEvents, plural(t.EarlierEvents, "event", "events"))
	}
	for _, e := range t.Events {
		line := fmt.Sprintf("#%d.%d %s", e.Seq, e.Index, e.Text)
		if e.At != nil {
			line += " at=" + e.At.Format(time.RFC3339Nano)
		}
		p(3, "%s", line)
	}
}

// states renders the counts in a fixed order: the role's states first,
// anything unexpected after them, sorted.
func states(n *NodeReport) string {
	order, ended := coordStates[:3], coordStates[3:]
	if n.Role == RoleParticipant {
		order, ended = partStates[:1], partStates[1:]
	}
	var extra []string
	for k := range n.States {
		if !slices.Contains(order, k) && !slices.Contains(ended, k) {
			extra = append(extra, k)
		}
	}
	slices.Sort(extra)
	kv := func(keys []string) string {
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = k + "=" + strconv.Itoa(n.States[k])
		}
		return strings.Join(parts, " ")
	}
	s := kv(order) + " | ended, still in the log: " + kv(ended)
	if len(extra) > 0 {
		s += " | other: " + kv(extra)
	}
	return s
}

func nodes(ns []int) string {
	parts := make([]string, len(ns))
	for i, n := range ns {
		parts[i] = "p" + strconv.Itoa(n)
	}
	return strings.Join(parts, ",")
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
