package chaos

import (
	"slices"
	"strings"
	"testing"
)

// rec is a transaction of the first coordinator.
func rec(tx uint64, told Told, acked ...int) *TxRecord {
	return recOf(1, tx, told, acked...)
}

// recOf is a transaction of coordinator incarnation inc.
func recOf(inc int, tx uint64, told Told, acked ...int) *TxRecord {
	return &TxRecord{TxID: tx, Incarnation: inc, Told: told, Sent: append([]int(nil), acked...), Acked: acked}
}

// first keys a transaction of the first coordinator.
func first(tx uint64) TxKey { return TxKey{Incarnation: 1, TxID: tx} }

// observed builds an observation of three participants from rows per node.
func observed(status map[TxKey]string, rows ...map[TxKey]int) Observed {
	return Observed{Rows: rows, Prepared: make([][]string, len(rows)), Status: status}
}

func TestCheckCleanRun(t *testing.T) {
	records := []*TxRecord{
		rec(1, ToldCommit, 1, 2, 0),
		rec(2, ToldAbort, 1, 0, 1),
		rec(3, ToldUnknown, 0, 1, 1), // turned out committed
		rec(4, ToldUnknown, 1, 0, 0), // turned out aborted
	}
	obs := observed(map[TxKey]string{first(1): "committed", first(2): "aborted", first(3): "committed", first(4): "aborted"},
		map[TxKey]int{first(1): 1},
		map[TxKey]int{first(1): 2, first(3): 1},
		map[TxKey]int{first(3): 1})
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
		{name: "lost row on a node", rec: rec(1, ToldUnknown, 2, 1, 0), status: "committed", rows: []int{1, 1, 0}, want: "not atomic: node 0 has 1 rows, 2"},
		{name: "told commit, nothing there", rec: rec(1, ToldCommit, 1, 0, 0), status: "committed", rows: []int{0, 0, 0}, want: "told commit but no node"},
		{name: "told abort, rows there", rec: rec(1, ToldAbort, 1, 1, 0), status: "aborted", rows: []int{1, 1, 0}, want: "told abort"},
		{name: "failed statement committed", rec: func() *TxRecord { r := rec(1, ToldCommit, 1, 0, 0); r.Failed = true; return r }(), status: "committed", rows: []int{1, 0, 0}, want: "a statement failed"},
		{name: "told commit after a failed statement", rec: func() *TxRecord { r := rec(1, ToldCommit, 0, 0, 0); r.Failed = true; return r }(), status: "committed", rows: []int{0, 0, 0}, want: "told commit although a statement failed"},
		{name: "told commit after a statement that cannot succeed", rec: func() *TxRecord { r := rec(1, ToldCommit, 1, 0, 0); r.PlannedFail, r.OneCall = true, true; return r }(), status: "committed", rows: []int{1, 0, 0}, want: "told commit although it sent a statement that cannot succeed"},
		{name: "rolled back but committed", rec: func() *TxRecord { r := rec(1, ToldUnknown, 1, 0, 0); r.RolledBack = true; return r }(), status: "committed", rows: []int{1, 0, 0}, want: "never asked to commit"},
		{name: "outcome forgotten", rec: rec(1, ToldUnknown, 1, 0, 0), status: "forgotten", rows: []int{1, 0, 0}, want: "forgot its outcome"},
		{name: "coordinator and data disagree", rec: rec(1, ToldUnknown, 1, 0, 0), status: "aborted", rows: []int{1, 0, 0}, want: "coordinator says aborted"},
		{name: "coordinator says committed, no rows", rec: rec(1, ToldUnknown, 1, 0, 0), status: "committed", rows: []int{0, 0, 0}, want: "coordinator says committed"},
		{name: "not ended", rec: rec(1, ToldUnknown, 1, 0, 0), status: "committing", rows: []int{1, 0, 0}, want: "still committing"},
		{name: "never issued", rec: rec(1, ToldUnknown, 1, 0, 0), status: "unknown", rows: []int{0, 0, 0}, want: "never issued"},
		{name: "no status", rec: rec(1, ToldAbort, 1, 0, 0), status: "", rows: []int{0, 0, 0}, want: "no status"},
		{name: "prepared left", rec: rec(1, ToldAbort, 1, 0, 0), status: "aborted", rows: []int{0, 0, 0}, prepare: []string{"tpcd:x:1:1:0"}, want: "prepared transaction tpcd:x:1:1:0 left behind"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var rows []map[TxKey]int
			for _, n := range tc.rows {
				m := map[TxKey]int{}
				if n > 0 {
					m[tc.rec.Key()] = n
				}
				rows = append(rows, m)
			}
			obs := observed(map[TxKey]string{tc.rec.Key(): tc.status}, rows...)
			if tc.status == "" {
				obs.Status = map[TxKey]string{}
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
	obs := observed(map[TxKey]string{}, map[TxKey]int{first(99): 1})
	obs.Alarms = []string{`participant-0: level=ERROR msg="ATOMICITY VIOLATION" tx=5`}
	v := Check(nil, obs)
	if !anyContains(v.Violations, "tx 99 of coordinator #1, which no client was given") || !anyContains(v.Violations, "ATOMICITY VIOLATION") {
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

// A replaced coordinator issues the old ids again: transaction 1 and 2 of
// the second coordinator are other transactions than 1 and 2 of the first,
// and their rows say which they are. Keyed by id alone, the check would
// take the first coordinator's committed rows for the second's aborted
// transaction 1, and the second's for the first's rolled-back transaction 2.
func TestCheckKeepsIncarnationsApart(t *testing.T) {
	rolledBack := recOf(1, 2, ToldAbort, 1, 0, 0)
	rolledBack.RolledBack = true
	records := []*TxRecord{
		recOf(1, 1, ToldCommit, 1, 1, 0),
		rolledBack,
		recOf(2, 1, ToldAbort, 0, 1, 0),
		recOf(2, 2, ToldCommit, 1, 0, 1),
	}
	second := func(tx uint64) TxKey { return TxKey{Incarnation: 2, TxID: tx} }
	obs := observed(map[TxKey]string{first(1): "committed", first(2): "aborted", second(1): "aborted", second(2): "committed"},
		map[TxKey]int{first(1): 1, second(2): 1},
		map[TxKey]int{first(1): 1},
		map[TxKey]int{second(2): 1})
	v := Check(records, obs)
	if len(v.Violations) != 0 {
		t.Fatalf("violations where each incarnation kept its promises: %q", v.Violations)
	}
	if v.AppliedCommit != 2 || v.AppliedAbort != 2 {
		t.Fatalf("verdict %+v, want 2 applied commits and 2 aborts", v)
	}
}

// The failure the identity check of the participants prevents: the first
// coordinator's transaction 2 wrote a row and was left open when that
// coordinator was replaced; the participant took the second coordinator's
// transaction 2 for it and committed the old row instead of the new one.
// Both transactions must be reported, each under its own coordinator.
func TestCheckCatchesOldRowCommittedUnderNewTx(t *testing.T) {
	orphan := recOf(1, 2, ToldUnknown, 1, 0, 0)
	orphan.Lost = true
	fresh := recOf(2, 2, ToldCommit, 1, 0, 0)
	obs := observed(map[TxKey]string{first(2): "aborted", {Incarnation: 2, TxID: 2}: "committed"},
		map[TxKey]int{first(2): 1}, // the old row, with the old coordinator's id
		map[TxKey]int{},
		map[TxKey]int{})
	v := Check([]*TxRecord{orphan, fresh}, obs)
	for _, want := range []string{
		"tx 2 of coordinator #1 (client 0, told unknown): the client never asked to commit but rows are committed on nodes [0]",
		"tx 2 of coordinator #1 (client 0, told unknown): the coordinator says aborted but rows are committed",
		"tx 2 of coordinator #2 (client 0, told commit): client was told commit but no node has its rows",
		"tx 2 of coordinator #2 (client 0, told commit): the coordinator says committed but no node has its rows",
	} {
		if !anyContains(v.Violations, want) {
			t.Errorf("no violation %q in %q", want, v.Violations)
		}
	}
}

// Rows under an id the second coordinator never issued are phantoms even
// when the first one issued that id.
func TestCheckPhantomOfAnotherIncarnation(t *testing.T) {
	obs := observed(map[TxKey]string{first(5): "committed"},
		map[TxKey]int{first(5): 1, {Incarnation: 2, TxID: 5}: 1})
	v := Check([]*TxRecord{recOf(1, 5, ToldCommit, 1)}, obs)
	if len(v.Violations) != 1 || !strings.Contains(v.Violations[0], "node 0 has 1 rows of tx 5 of coordinator #2, which no client was given") {
		t.Fatalf("violations %q", v.Violations)
	}
}

func TestDescribeIncarnations(t *testing.T) {
	records := []*TxRecord{recOf(1, 1, ToldCommit), recOf(1, 2, ToldAbort), recOf(1, 7, ToldCommit), recOf(2, 2, ToldCommit), recOf(2, 3, ToldCommit)}
	got, reused := describeIncarnations([]string{"c1", "c2"}, records)
	want := []Incarnation{{Cluster: "c1", Transactions: 3, FirstTx: 1, LastTx: 7}, {Cluster: "c2", Transactions: 2, FirstTx: 2, LastTx: 3}}
	if !slices.Equal(got, want) || reused != 1 {
		t.Fatalf("got %+v, %d reused; want %+v, 1", got, reused, want)
	}
}

// A transaction left open when its coordinator was replaced has no state
// anywhere; that is expected, and only its rows would be wrong.
func TestCheckOrphans(t *testing.T) {
	orphan := func() *TxRecord { r := recOf(2, 1, ToldUnknown, 1, 1, 1); r.Orphaned = true; return r }
	second := TxKey{Incarnation: 2, TxID: 1}
	v := Check([]*TxRecord{orphan()}, observed(map[TxKey]string{}, map[TxKey]int{}, map[TxKey]int{}, map[TxKey]int{}))
	if len(v.Violations) != 0 {
		t.Fatalf("violations for an orphan without rows: %q", v.Violations)
	}
	v = Check([]*TxRecord{orphan()}, observed(map[TxKey]string{}, map[TxKey]int{second: 1}, map[TxKey]int{}, map[TxKey]int{}))
	want := "tx 1 of coordinator #2 (client 0, told unknown): left open when its coordinator was replaced, but rows are committed on nodes [0]"
	if !anyContains(v.Violations, want) {
		t.Fatalf("no violation %q in %q", want, v.Violations)
	}
}

// The bug the orphans are there to catch, as the data would show it: the
// third coordinator's transaction 1 was taken by participant 0 for the
// open transaction 1 of the second, so its commit committed the orphan's
// row there instead of its own.
func TestCheckCatchesOrphanRowCommittedUnderNewTx(t *testing.T) {
	orphan := recOf(2, 1, ToldUnknown, 1, 1, 1)
	orphan.Orphaned = true
	fresh := recOf(3, 1, ToldCommit, 1, 1, 0)
	obs := observed(map[TxKey]string{{Incarnation: 3, TxID: 1}: "committed"},
		map[TxKey]int{{Incarnation: 2, TxID: 1}: 1},
		map[TxKey]int{{Incarnation: 3, TxID: 1}: 1},
		map[TxKey]int{})
	v := Check([]*TxRecord{orphan, fresh}, obs)
	for _, want := range []string{
		"tx 1 of coordinator #2 (client 0, told unknown): left open when its coordinator was replaced, but rows are committed on nodes [0]",
		"tx 1 of coordinator #3 (client 0, told commit): not atomic: node 0 has 0 rows, 1 inserts were acknowledged there",
	} {
		if !anyContains(v.Violations, want) {
			t.Errorf("no violation %q in %q", want, v.Violations)
		}
	}
}

func TestCountOrphans(t *testing.T) {
	orphan := func(inc int, tx uint64) *TxRecord {
		r := recOf(inc, tx, ToldUnknown, 1, 1, 1)
		r.Orphaned = true
		return r
	}
	records := []*TxRecord{
		orphan(2, 1), orphan(2, 2), orphan(2, 3),
		recOf(3, 1, ToldCommit, 0, 1, 0),
		recOf(3, 2, ToldAbort, 0, 0, 0),  // begun, sent nothing
		recOf(1, 3, ToldCommit, 1, 0, 0), // an earlier coordinator's, not the next one's
		orphan(4, 1), recOf(5, 1, ToldCommit, 1, 0, 0),
	}
	records[len(records)-2].Acked = []int{0, 0, 0} // left open before any work was acknowledged
	orphans, met := countOrphans(records)
	if orphans != 4 || met != 1 {
		t.Fatalf("got %d orphans, %d met; want 4, 1", orphans, met)
	}
}

// TestCheckPlainTransactions: a plain transaction has no coordinator
// status to agree with, only data: a clean one passes without a status,
// and a lie or a half commit of one is caught like any other's.
func TestCheckPlainTransactions(t *testing.T) {
	plain := func(tx uint64, told Told, acked ...int) *TxRecord {
		r := recOf(plainIncarnation, tx, told, acked...)
		r.Plain, r.OneCall = true, true
		return r
	}
	key := func(tx uint64) TxKey { return TxKey{Incarnation: plainIncarnation, TxID: tx} }
	clean := []*TxRecord{plain(1, ToldCommit, 0, 2, 0), plain(2, ToldAbort, 1, 0, 0), plain(3, ToldUnknown, 0, 0, 1)}
	v := Check(clean, observed(map[TxKey]string{}, map[TxKey]int{}, map[TxKey]int{key(1): 2}, map[TxKey]int{key(3): 1}))
	if len(v.Violations) != 0 || v.AppliedCommit != 2 || v.UnknownCommit != 1 {
		t.Fatalf("clean plain transactions: %+v", v)
	}
	for _, tc := range []struct {
		rec  *TxRecord
		rows int
		want string
	}{
		{plain(1, ToldCommit, 0, 2, 0), 0, "plain transaction 1 (client 0, told commit): client was told commit but no node has its rows"},
		{plain(1, ToldAbort, 0, 2, 0), 2, "told abort"},
		{plain(1, ToldUnknown, 0, 2, 0), 1, "not atomic: node 1 has 1 rows, 2 inserts"},
		{func() *TxRecord { r := plain(1, ToldUnknown, 0, 2, 0); r.PlannedFail = true; return r }(), 2, "sent a statement that cannot succeed in the same call, but rows are committed"},
	} {
		v := Check([]*TxRecord{tc.rec}, observed(map[TxKey]string{}, map[TxKey]int{}, map[TxKey]int{key(1): tc.rows}, map[TxKey]int{}))
		if len(v.Violations) != 1 || !strings.Contains(v.Violations[0], tc.want) {
			t.Errorf("%s with %d rows: %v, want one violation naming %q", tc.rec.Told, tc.rows, v.Violations, tc.want)
		}
	}
}
