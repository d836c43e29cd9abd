package chaos

import (
	"strings"
	"testing"
)

func rec(tx uint64, told Told, acked ...int) *TxRecord {
	return &TxRecord{TxID: tx, Told: told, Sent: append([]int(nil), acked...), Acked: acked}
}

// observed builds an observation of three participants from rows per node.
func observed(status map[uint64]string, rows ...map[uint64]int) Observed {
	return Observed{Rows: rows, Prepared: make([][]string, len(rows)), Status: status}
}

func TestCheckCleanRun(t *testing.T) {
	records := []*TxRecord{
		rec(1, ToldCommit, 1, 2, 0),
		rec(2, ToldAbort, 1, 0, 1),
		rec(3, ToldUnknown, 0, 1, 1), // turned out committed
		rec(4, ToldUnknown, 1, 0, 0), // turned out aborted
	}
	obs := observed(map[uint64]string{1: "committed", 2: "aborted", 3: "forgotten", 4: "aborted"},
		map[uint64]int{1: 1},
		map[uint64]int{1: 2, 3: 1},
		map[uint64]int{3: 1})
	v := Check(records, obs)
	if len(v.Violations) != 0 {
		t.Fatalf("violations in a clean run: %v", v.Violations)
	}
	if v.AppliedCommit != 2 || v.AppliedAbort != 2 || v.UnknownCommit != 1 || v.UnknownAbort != 1 {
		t.Fatalf("verdict %+v", v)
	}
}

func TestCheckFindsEachViolation(t *testing.T) {
	cases := []struct {
		name    string
		rec     *TxRecord
		status  string
		rows    []int // per node
		want    string
		prepare []string
	}{
		{name: "partial commit", rec: rec(1, ToldCommit, 1, 1, 0), status: "committed", rows: []int{1, 0, 0}, want: "not atomic: node 1"},
		{name: "lost row on a node", rec: rec(1, ToldUnknown, 2, 1, 0), status: "forgotten", rows: []int{1, 1, 0}, want: "not atomic: node 0 has 1 rows, 2"},
		{name: "told commit, nothing there", rec: rec(1, ToldCommit, 1, 0, 0), status: "committed", rows: []int{0, 0, 0}, want: "told commit but no node"},
		{name: "told abort, rows there", rec: rec(1, ToldAbort, 1, 1, 0), status: "aborted", rows: []int{1, 1, 0}, want: "told abort"},
		{name: "failed statement committed", rec: func() *TxRecord { r := rec(1, ToldCommit, 1, 0, 0); r.Failed = true; return r }(), status: "committed", rows: []int{1, 0, 0}, want: "a statement failed"},
		{name: "told commit after a failed statement", rec: func() *TxRecord { r := rec(1, ToldCommit, 0, 0, 0); r.Failed = true; return r }(), status: "committed", rows: []int{0, 0, 0}, want: "told commit although a statement failed"},
		{name: "rolled back but committed", rec: func() *TxRecord { r := rec(1, ToldUnknown, 1, 0, 0); r.RolledBack = true; return r }(), status: "forgotten", rows: []int{1, 0, 0}, want: "never asked to commit"},
		{name: "coordinator and data disagree", rec: rec(1, ToldUnknown, 1, 0, 0), status: "aborted", rows: []int{1, 0, 0}, want: "coordinator says aborted"},
		{name: "coordinator says committed, no rows", rec: rec(1, ToldUnknown, 1, 0, 0), status: "committed", rows: []int{0, 0, 0}, want: "coordinator says committed"},
		{name: "not ended", rec: rec(1, ToldUnknown, 1, 0, 0), status: "committing", rows: []int{1, 0, 0}, want: "still committing"},
		{name: "never issued", rec: rec(1, ToldUnknown, 1, 0, 0), status: "unknown", rows: []int{0, 0, 0}, want: "never issued"},
		{name: "no status", rec: rec(1, ToldAbort, 1, 0, 0), status: "", rows: []int{0, 0, 0}, want: "no status"},
		{name: "prepared left", rec: rec(1, ToldAbort, 1, 0, 0), status: "aborted", rows: []int{0, 0, 0}, prepare: []string{"tpcd:x:1:1:0"}, want: "prepared transaction tpcd:x:1:1:0 left behind"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var rows []map[uint64]int
			for _, n := range tc.rows {
				m := map[uint64]int{}
				if n > 0 {
					m[tc.rec.TxID] = n
				}
				rows = append(rows, m)
			}
			obs := observed(map[uint64]string{tc.rec.TxID: tc.status}, rows...)
			if tc.status == "" {
				obs.Status = map[uint64]string{}
			}
			obs.Prepared[0] = tc.prepare
			v := Check([]*TxRecord{tc.rec}, obs)
			if !anyContains(v.Violations, tc.want) {
				t.Fatalf("want a violation mentioning %q, got %q", tc.want, v.Violations)
			}
		})
	}
}

func TestCheckPhantomRowsAndAlarms(t *testing.T) {
	obs := observed(map[uint64]string{}, map[uint64]int{99: 1})
	obs.Alarms = []string{`participant-0: level=ERROR msg="ATOMICITY VIOLATION" tx=5`}
	v := Check(nil, obs)
	if !anyContains(v.Violations, "tx 99, which no client was given") || !anyContains(v.Violations, "ATOMICITY VIOLATION") {
		t.Fatalf("violations %q", v.Violations)
	}
}

func anyContains(list []string, s string) bool {
	for _, v := range list {
		if strings.Contains(v, s) {
			return true
		}
	}
	return false
}
