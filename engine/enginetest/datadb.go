package enginetest

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/tpcd/tpcd/engine"
)

// Statements in the simulated data database are plain strings. One that
// starts with "select" reads and writes nothing; one that contains "fail"
// raises an error (a constraint violation, say); anything else writes one row.

// StatementWrites reports whether sql writes in the simulated data database.
func StatementWrites(sql string) bool {
	return !strings.HasPrefix(strings.TrimSpace(strings.ToLower(sql)), "select") && !StatementFails(sql)
}

// StatementFails reports whether sql raises an error in the simulated data
// database.
func StatementFails(sql string) bool { return strings.Contains(strings.ToLower(sql), "fail") }

// Fault changes how one data operation turns out.
type Fault uint8

const (
	// NoFault lets the operation do what the data database would do.
	NoFault Fault = iota
	// FailOp makes the operation fail with an error. Exec and prepare lose
	// their open data transaction; the others change nothing.
	FailOp
	// FailAfterPrepare makes PREPARE TRANSACTION succeed but report an error,
	// as when the connection breaks just after the server prepared.
	FailAfterPrepare
	// RetryOp reports the data database unreachable: nothing changes and the
	// result has Retry set.
	RetryOp
	// ForceReadOnly makes prepare commit the open transaction instead and
	// report read-only (the driver may do so when nothing was written).
	ForceReadOnly
	// ForcePrepare makes prepare really prepare a transaction that wrote
	// nothing, which a driver is also free to do.
	ForcePrepare
	// FailAfterCommit makes a decider's COMMIT succeed but report an
	// error, as when the connection breaks just after the server committed.
	FailAfterCommit
	// FailThen makes what a statement carried (Data.Then: its prepare or
	// commit) fail, the statement itself succeeding.
	FailThen
)

var faultNames = [...]string{"ok", "error", "error-after-prepare", "retry", "read-only", "force-prepare", "error-after-commit", "error-then"}

func (f Fault) String() string {
	if int(f) < len(faultNames) {
		return faultNames[f]
	}
	return "fault(?)"
}

// TxKey names a transaction across clusters: a coordinator that lost its
// log starts a new cluster, which hands out the same ids again.
type TxKey struct {
	Cluster string
	Tx      engine.TxID
}

func (k TxKey) String() string { return fmt.Sprintf("%s/%d", k.Cluster, k.Tx) }

// keyOf names the transaction a GID belongs to.
func keyOf(gid string, tx engine.TxID) TxKey {
	g, _ := engine.ParseGID(gid)
	return TxKey{Cluster: g.Cluster, Tx: tx}
}

// dataTx is one data transaction: open, or prepared under its GID.
type dataTx struct {
	key    TxKey
	gid    string
	xid    uint64
	writes []string
	failed bool
}

// DataDB simulates one participant's PostgreSQL data database: open
// transactions (one connection each, lost in a crash), prepared transactions
// and committed outcome markers (both survive a crash), and committed rows.
type DataDB struct {
	open     map[engine.TxID]*dataTx
	prepared map[string]*dataTx
	markers  map[string]bool
	// markerKeys are the idempotency keys stored with a marker.
	markerKeys map[string][]string
	// tombstones are decider branches settled as aborted: rows under the
	// marker's name, so that the branch's own marker can never be
	// inserted after them.
	tombstones map[string]bool
	// committed holds the written statements of every committed transaction;
	// a second commit of the same transaction appends, which the checker
	// reports.
	committed map[TxKey][]string
	commits   map[TxKey]int
	// broken marks transactions whose connection died with the server: the
	// driver's next statement on them fails instead of starting afresh.
	broken map[engine.TxID]bool
	// xactCommitted is the commit log of prepared transactions, by
	// transaction id: true once committed, false once rolled back. Like
	// PostgreSQL's, it survives a crash.
	xactCommitted map[uint64]bool
	lastXid       uint64
}

func newDataDB() *DataDB {
	return &DataDB{
		open:       map[engine.TxID]*dataTx{},
		prepared:   map[string]*dataTx{},
		markers:    map[string]bool{},
		markerKeys: map[string][]string{},
		tombstones: map[string]bool{},
		committed:  map[TxKey][]string{},
		commits:    map[TxKey]int{},
		broken:     map[engine.TxID]bool{},

		xactCommitted: map[uint64]bool{},
	}
}

// PreparedXids gives the transaction id of each prepared GID, as
// pg_prepared_xacts would.
func (d *DataDB) PreparedXids() map[string]uint64 {
	m := map[string]uint64{}
	for gid, t := range d.prepared {
		m[gid] = t.xid
	}
	return m
}

// CommittedXids returns those of xids the commit log shows committed.
func (d *DataDB) CommittedXids(xids []uint64) []uint64 {
	var c []uint64
	for _, x := range xids {
		if d.xactCommitted[x] {
			c = append(c, x)
		}
	}
	return c
}

// finished tells what the commit log, or for a branch of unknown id the
// marker table, says of a branch that is no longer prepared.
func (d *DataDB) finished(op engine.Data) (committed bool) {
	if op.Xid != 0 {
		return d.xactCommitted[op.Xid]
	}
	return d.markers[op.GID]
}

// PreparedGIDs lists the prepared transactions, sorted, as pg_prepared_xacts
// would.
func (d *DataDB) PreparedGIDs() []string { return slices.Sorted(maps.Keys(d.prepared)) }

// Markers lists the committed outcome markers, sorted.
func (d *DataDB) Markers() []string { return slices.Sorted(maps.Keys(d.markers)) }

// MarkerKeys returns the idempotency keys stored with the markers, by GID.
func (d *DataDB) MarkerKeys() map[string][]string { return maps.Clone(d.markerKeys) }

// Tombstones lists the decider branches settled as aborted, sorted.
func (d *DataDB) Tombstones() []string { return slices.Sorted(maps.Keys(d.tombstones)) }

// OpenTxs lists the transactions with an open data transaction.
func (d *DataDB) OpenTxs() []engine.TxID {
	ids := make([]engine.TxID, 0, len(d.open))
	for id := range d.open {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Committed returns the written statements of a committed transaction.
func (d *DataDB) Committed(k TxKey) ([]string, bool) {
	w, ok := d.committed[k]
	return w, ok
}

// fate is what one data operation did to a transaction, for the checker.
type fate uint8

const (
	fateNone fate = iota
	fateOpen
	fatePrepared
	fateCommitted
	fateAborted
	fateReadOnly
	// fateSettledAborted is the tombstone of a decider's branch: it can
	// never commit from now on. It is reported as a change of its own and
	// not recorded as a participant's fate.
	fateSettledAborted
)

var fateNames = [...]string{"none", "open", "prepared", "committed", "rolled back", "read-only", "settled aborted"}

func (f fate) String() string { return fateNames[f] }

// change reports a transition caused by an operation: the transaction, its
// new fate, and whether the abandoned or committed work wrote anything.
type change struct {
	key    TxKey
	to     fate
	writes []string
	// decider marks the commit of a decider's branch: the decision.
	decider bool
}

// crash loses every open transaction, as closing their connections would.
// When the server alone crashed (serverOnly), the participant's driver still
// holds the dead connections, so their next statements fail.
func (d *DataDB) crash(serverOnly bool) []change {
	var out []change
	for _, id := range d.OpenTxs() {
		out = append(out, change{key: d.open[id].key, to: fateAborted, writes: d.open[id].writes})
		if serverOnly {
			d.broken[id] = true
		}
	}
	clear(d.open)
	if !serverOnly {
		clear(d.broken)
	}
	return out
}

// run performs one data operation and returns its result as the engine
// expects it, plus the transitions it caused.
func (d *DataDB) run(op engine.Data, f Fault) (engine.DataDone, []change) {
	if op.Op == engine.DataExec && op.Then != 0 {
		return d.runThen(op, f)
	}
	done := engine.DataDone{Op: op.Op, TxID: op.TxID, Stmt: op.Stmt}
	var ch []change
	fail := func(format string, args ...any) {
		done.Err = fmt.Sprintf(format, args...)
	}
	// injected fails an operation on a prepared GID as f says: a retryable
	// connection error or a plain failure.
	injected := func(what string) bool {
		switch f {
		case RetryOp:
			done.Retry = true
			fail("connection refused")
		case FailOp:
			fail("injected %s error", what)
		default:
			return false
		}
		return true
	}
	switch op.Op {
	case engine.DataExec:
		if d.broken[op.TxID] {
			fail("server closed the connection unexpectedly")
			return done, ch
		}
		t := d.open[op.TxID]
		if t == nil {
			t = &dataTx{key: keyOf(op.GID, op.TxID), gid: op.GID}
			d.open[op.TxID] = t
			ch = append(ch, change{key: t.key, to: fateOpen})
		}
		switch {
		case t.failed:
			fail("current transaction is aborted, commands ignored until end of transaction block")
		case f == FailOp:
			t.failed = true
			fail("injected statement error")
		case StatementFails(op.SQL):
			t.failed = true
			fail("duplicate key value violates unique constraint")
		case StatementWrites(op.SQL):
			t.writes = append(t.writes, op.SQL)
			done.Result = &engine.StmtResult{RowsAffected: 1, Tag: "INSERT 0 1"}
		default:
			done.Result = &engine.StmtResult{Columns: []string{"n"}, Rows: [][]any{{int64(len(t.writes))}}, RowsAffected: 1, Tag: "SELECT 1"}
		}
	case engine.DataPrepare, engine.DataCommitBranch:
		delete(d.broken, op.TxID)
		t := d.open[op.TxID]
		if t == nil {
			fail("no open data transaction (connection lost)")
			return done, ch
		}
		var ended *change
		switch {
		case t.failed:
			fail("current transaction is aborted")
		case op.Op == engine.DataPrepare:
			ended = d.prepare(t, op, f, &done)
		default:
			ended = d.commitBranch(t, op, f, &done)
		}
		if ended != nil {
			return done, append(ch, *ended)
		}
		// A failed prepare loses the open transaction with its connection;
		// a failed COMMIT rolls it back.
		delete(d.open, op.TxID)
		ch = append(ch, change{key: t.key, to: fateAborted, writes: t.writes})
	case engine.DataRollback:
		delete(d.broken, op.TxID)
		if t := d.open[op.TxID]; t != nil {
			delete(d.open, op.TxID)
			ch = append(ch, change{key: t.key, to: fateAborted, writes: t.writes})
		}
		if f == FailOp {
			fail("injected rollback error")
		}
	case engine.DataCommitPrepared:
		if injected("commit") {
			return done, ch
		}
		if t := d.prepared[op.GID]; t != nil {
			delete(d.prepared, op.GID)
			d.xactCommitted[t.xid] = true
			d.commit(t)
			return done, append(ch, change{key: t.key, to: fateCommitted, writes: t.writes})
		}
		if !d.finished(op) {
			fail("prepared transaction with identifier %q does not exist", op.GID)
		}
	case engine.DataRollbackPrepared:
		if injected("rollback") {
			return done, ch
		}
		if t := d.prepared[op.GID]; t != nil {
			delete(d.prepared, op.GID)
			d.xactCommitted[t.xid] = false
			return done, append(ch, change{key: t.key, to: fateAborted, writes: t.writes})
		}
		if d.finished(op) {
			fail("prepared transaction with identifier %q does not exist and committed", op.GID)
		}
	case engine.DataDeleteMarker:
		if injected("delete") {
			return done, ch
		}
		delete(d.markers, op.GID)
		delete(d.markerKeys, op.GID)
		delete(d.tombstones, op.GID)
	case engine.DataSettle:
		if f == RetryOp || f == FailOp {
			done.Retry = f == RetryOp
			fail("connection refused")
			return done, ch
		}
		if !d.markers[op.GID] {
			d.tombstones[op.GID] = true
			return done, append(ch, change{key: keyOf(op.GID, op.TxID), to: fateSettledAborted})
		}
		done.Committed, done.Keys = true, d.markerKeys[op.GID]
	}
	return done, ch
}

// prepare ends open transaction t as op asks: prepared, or committed when
// the driver reports it read-only; f may make it fail. It returns the
// transition of a transaction that is no longer open, nil when it failed
// (done.Err says why).
func (d *DataDB) prepare(t *dataTx, op engine.Data, f Fault, done *engine.DataDone) *change {
	switch {
	case f == FailOp:
		done.Err = "injected prepare error"
	case f == ForceReadOnly || len(t.writes) == 0 && f != ForcePrepare:
		// A driver that commits instead of preparing makes whatever was
		// written permanent, so the checker sees it as a commit.
		delete(d.open, op.TxID)
		done.ReadOnly = true
		if len(t.writes) > 0 {
			d.commit(t)
		}
		return &change{key: t.key, to: fateReadOnly, writes: t.writes}
	case d.markers[op.GID]:
		done.Err = "duplicate key value violates unique constraint on the outcome marker"
	case d.prepared[op.GID] != nil:
		done.Err = fmt.Sprintf("transaction identifier %q is already in use", op.GID)
	default:
		delete(d.open, op.TxID)
		t.gid = op.GID
		d.lastXid++
		t.xid = d.lastXid
		d.prepared[op.GID] = t
		done.Xid = t.xid
		if f == FailAfterPrepare {
			done.Err = "connection lost after PREPARE TRANSACTION"
		}
		return &change{key: t.key, to: fatePrepared, writes: t.writes}
	}
	return nil
}

// commitBranch commits open transaction t with its outcome marker, as a
// decider does; f may make it fail. It returns the transition of the
// committed transaction, nil when the commit failed (done.Err says why).
func (d *DataDB) commitBranch(t *dataTx, op engine.Data, f Fault, done *engine.DataDone) *change {
	switch {
	case f == FailOp || f == RetryOp:
		done.Err = "injected commit error"
	case d.markers[op.GID] || d.tombstones[op.GID]:
		done.Err = "duplicate key value violates unique constraint on the outcome marker"
	default:
		// The marker and the writes commit together.
		delete(d.open, op.TxID)
		d.markers[op.GID] = true
		if len(op.Keys) > 0 {
			d.markerKeys[op.GID] = op.Keys
		}
		t.gid = op.GID
		t.key = keyOf(op.GID, op.TxID)
		d.commit(t)
		if f == FailAfterCommit {
			done.Err = "connection lost during COMMIT"
		}
		return &change{key: t.key, to: fateCommitted, writes: t.writes, decider: true}
	}
	return nil
}

// runThen runs a statement and what it carries, as a driver does in one
// round trip: the prepare or commit runs only when the statement
// succeeded. A driver prepares such a branch without asking whether it
// wrote. FailOp fails the statement; FailThen fails what follows; the
// other faults apply to what follows.
func (d *DataDB) runThen(op engine.Data, f Fault) (engine.DataDone, []change) {
	stmt := op
	stmt.Then = 0
	sf := NoFault
	if f == FailOp {
		sf = FailOp
	}
	done, ch := d.run(stmt, sf)
	if done.Err != "" {
		return done, ch
	}
	tf := f
	switch f {
	case NoFault:
		if op.Then == engine.DataPrepare {
			tf = ForcePrepare
		}
	case FailThen:
		tf = FailOp
	case FailOp:
		tf = NoFault
	}
	then, tch := d.run(engine.Data{Op: op.Then, TxID: op.TxID, GID: op.GID, Keys: op.Keys}, tf)
	done.Then, done.ThenErr, done.ReadOnly, done.Retry, done.Xid = op.Then, then.Err, then.ReadOnly, then.Retry, then.Xid
	return done, append(ch, tch...)
}

// commit makes t's writes permanent; a second commit of the same
// transaction appends again, which the checker reports.
func (d *DataDB) commit(t *dataTx) {
	d.committed[t.key] = append(d.committed[t.key], t.writes...)
	d.commits[t.key]++
}

// describe renders the database on a few lines.
func (d *DataDB) describe(b *strings.Builder, name string) {
	var open []string
	for _, id := range d.OpenTxs() {
		t := d.open[id]
		s := fmt.Sprintf("%d(writes=%d", id, len(t.writes))
		if t.failed {
			s += " failed"
		}
		open = append(open, s+")")
	}
	keys := slices.SortedFunc(maps.Keys(d.committed), func(a, b TxKey) int {
		return cmp.Or(cmp.Compare(a.Tx, b.Tx), strings.Compare(a.Cluster, b.Cluster))
	})
	var committed []string
	for _, k := range keys {
		committed = append(committed, fmt.Sprintf("%d(writes=%d)", k.Tx, len(d.committed[k])))
	}
	tomb := ""
	if len(d.tombstones) > 0 {
		tomb = " tombstones=[" + strings.Join(d.Tombstones(), " ") + "]"
	}
	fmt.Fprintf(b, "%s data: open=[%s] prepared=[%s] markers=[%s]%s committed=[%s]\n", name,
		strings.Join(open, " "), strings.Join(d.PreparedGIDs(), " "), strings.Join(d.Markers(), " "), tomb, strings.Join(committed, " "))
}
