package replay_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/db"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/logstore"
	"github.com/tpcd/tpcd/replay"
)

// TestReplayFindings builds, by hand, a participant's log and data
// database with one transaction for every way the two can relate, and a
// coordinator's log beside them, then checks what replay reports for
// each: the category, whether it is a problem, and what the engine's start
// step would do (the finding's restart lines), both for a participant with
// lazy Prepared events and for one without. It also checks that replay
// wrote nothing.
func TestReplayFindings(t *testing.T) {
	ctx := context.Background()
	logPool := migrated(t, db.MigrateLog)
	dataPool := migrated(t, db.MigrateData)
	if _, err := dataPool.Exec(ctx, "CREATE TABLE kv (k int PRIMARY KEY, v text)"); err != nil {
		t.Fatal(err)
	}
	const cluster = "7c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f"
	gid := func(tx engine.TxID) string { return engine.GID{Cluster: cluster, Epoch: 1, Tx: tx, Node: 0}.String() }
	marker := func(tx engine.TxID) {
		t.Helper()
		if _, err := dataPool.Exec(ctx, "INSERT INTO tpcd_markers (gid, tx) VALUES ($1, $2)", gid(tx), int64(tx)); err != nil {
			t.Fatal(err)
		}
	}
	prepared := func(tx engine.TxID) engine.PartPrepared { return engine.PartPrepared{TxID: tx, GID: gid(tx)} }
	committed := func(tx engine.TxID) engine.PartCommitted { return engine.PartCommitted{TxID: tx, GID: gid(tx)} }
	aborted := func(tx engine.TxID) engine.PartAborted {
		return engine.PartAborted{TxID: tx, GID: gid(tx), Reason: "coordinator decided abort"}
	}
	forgotten := func(tx engine.TxID) engine.PartForgotten { return engine.PartForgotten{TxID: tx} }

	// What a restart does, as the start of the finding's restart lines.
	const (
		logPrepared  = "log part.prepared"
		logCommitted = "log part.committed"
		logAborted   = "log part.aborted"
		logViolation = "log part.violation"
		deleteMarker = "data delete-marker"
		inquire      = "send to=coordinator tpcd.inquire"
	)
	type want struct {
		category string // "" for no finding
		problem  bool
		restart  []string
	}
	cases := []struct {
		name   string
		events []engine.Event
		// preparedInDB leaves a prepared transaction (with its marker
		// inside) in the data database; markerInDB a committed marker.
		preparedInDB, markerInDB bool
		// decision is the coordinator's: "" none logged, "commit", "abort".
		decision  string
		eager     want
		lazy      *want // when it differs
		inDoubtTx bool
	}{
		{name: "in doubt", events: []engine.Event{prepared(1)}, preparedInDB: true,
			eager: want{restart: []string{inquire}}, inDoubtTx: true},
		{name: "commit not logged", events: []engine.Event{prepared(2)}, markerInDB: true,
			eager: want{category: replay.FindingCommitUnlogged, restart: []string{logCommitted, deleteMarker}}},
		{name: "abort not logged", events: []engine.Event{prepared(3)}, decision: "abort",
			eager: want{category: replay.FindingAbortUnlogged, restart: []string{logAborted}}},
		{name: "abort not logged, presumed", events: []engine.Event{prepared(4)},
			eager: want{category: replay.FindingAbortUnlogged, restart: []string{logAborted}}},
		{name: "rolled back, coordinator decided commit", events: []engine.Event{prepared(5)}, decision: "commit",
			eager: want{category: replay.FindingMissing, problem: true, restart: []string{logAborted}}},
		{name: "committed, marker awaits deletion", events: []engine.Event{prepared(6), committed(6)}, markerInDB: true,
			eager: want{restart: []string{deleteMarker}}},
		{name: "committed yet prepared", events: []engine.Event{prepared(7), committed(7)}, preparedInDB: true,
			eager: want{category: replay.FindingStillPrepared, problem: true, restart: []string{logViolation}}},
		{name: "committed yet prepared, older log", events: []engine.Event{prepared(8), committed(8), forgotten(8)}, preparedInDB: true,
			eager: want{category: replay.FindingStillPrepared, problem: true, restart: []string{logViolation}}},
		{name: "prepared, no events", preparedInDB: true,
			eager: want{category: replay.FindingOrphan, problem: true, restart: []string{logPrepared, inquire}},
			lazy:  &want{category: replay.FindingPreparedUnlogged, restart: []string{logPrepared, inquire}}},
		{name: "prepared, ended aborted", events: []engine.Event{prepared(10), aborted(10)}, preparedInDB: true,
			eager: want{category: replay.FindingOrphan, problem: true, restart: []string{logPrepared, inquire}}},
		{name: "marker, no events", markerInDB: true,
			eager: want{category: replay.FindingStrayMarker, problem: true, restart: []string{logCommitted, deleteMarker}},
			lazy:  &want{category: replay.FindingCommitUnlogged, restart: []string{logCommitted, deleteMarker}}},
		{name: "marker, ended aborted", events: []engine.Event{prepared(12), aborted(12)}, markerInDB: true,
			eager: want{category: replay.FindingStrayMarker, problem: true, restart: []string{logCommitted, deleteMarker}}},
		{name: "marker after part.forgotten", events: []engine.Event{prepared(13), committed(13), forgotten(13)}, markerInDB: true,
			eager: want{category: replay.FindingStrayMarker, problem: true, restart: []string{deleteMarker}}},
	}

	coordEvents := []engine.Event{engine.CoordStarted{Cluster: cluster, Epoch: 1}, engine.CoordTxIDsReserved{Through: 1024}}
	partEvents := []engine.Event{engine.PartEpochSeen{Cluster: cluster, Epoch: 1}}
	for i, tc := range cases {
		tx := engine.TxID(i + 1)
		for _, ev := range tc.events {
			if ev.Tx() != tx {
				t.Fatalf("case %q is tx %d, its events are of tx %d", tc.name, tx, ev.Tx())
			}
		}
		partEvents = append(partEvents, tc.events...)
		p0 := []engine.NodeID{0}
		coordEvents = append(coordEvents, engine.CoordPreparing{TxID: tx, Epoch: 1, Participants: p0})
		switch tc.decision {
		case "commit":
			coordEvents = append(coordEvents, engine.CoordDecided{TxID: tx, Epoch: 1, Outcome: engine.OutcomeCommit, Participants: p0})
		case "abort":
			coordEvents = append(coordEvents, engine.CoordDecided{TxID: tx, Epoch: 1, Outcome: engine.OutcomeAbort, Participants: p0})
		}
		if tc.preparedInDB {
			prepareByHand(t, dataPool, gid(tx), tx, int(tx), true)
		}
		if tc.markerInDB {
			marker(tx)
		}
	}
	// Another node's prepared transaction is none of participant-0's
	// business.
	foreign := engine.GID{Cluster: cluster, Epoch: 1, Tx: 1, Node: 1}.String()
	prepareByHand(t, dataPool, foreign, 1, 100, true)
	appendEvents(t, logPool, api.CoordinatorName, coordEvents...)
	appendEvents(t, logPool, api.ParticipantName(0), partEvents...)

	before := dataState(t, logPool, dataPool)
	for _, lazy := range []bool{false, true} {
		rep, err := replay.Run(ctx, replay.Options{Log: logPool, Data: dataPool, Node: api.ParticipantName(0), LazyPrepared: lazy})
		if err != nil {
			t.Fatal(err)
		}
		if !lazy {
			golden(t, "findings.golden", text(t, rep))
		}
		n := rep.Nodes[0]
		got := findings(n)
		problems := 0
		for i, tc := range cases {
			tx := engine.TxID(i + 1)
			w := tc.eager
			if lazy && tc.lazy != nil {
				w = *tc.lazy
			}
			if w.problem {
				problems++
			}
			f, found := got[uint64(tx)]
			if w.category == "" {
				if found {
					t.Errorf("lazy=%t, tx %d (%s): %s finding, want none", lazy, tx, tc.name, f.Category)
				}
				if tr := findTx(n, tx); tc.inDoubtTx && (tr == nil || !tr.InDoubt) {
					t.Errorf("lazy=%t, tx %d (%s): %+v, want listed in doubt", lazy, tx, tc.name, tr)
				}
				continue
			}
			if f.Category != w.category || f.Problem != w.problem {
				t.Errorf("lazy=%t, tx %d (%s): %s problem=%t, want %s problem=%t; %s", lazy, tx, tc.name, f.Category, f.Problem, w.category, w.problem, f.Detail)
			}
			if !restartIs(f.Restart, w.restart) {
				t.Errorf("lazy=%t, tx %d (%s): a restart does %q, want %q", lazy, tx, tc.name, f.Restart, w.restart)
			}
		}
		if len(got) != 11 {
			t.Errorf("lazy=%t: %d findings, want 11: %+v", lazy, len(got), got)
		}
		if rep.Problems != problems || n.Data.Foreign != 1 {
			t.Errorf("lazy=%t: %d problems, %d foreign GIDs; want %d and 1", lazy, rep.Problems, n.Data.Foreign, problems)
		}
	}
	if after := dataState(t, logPool, dataPool); !slices.Equal(after, before) {
		t.Errorf("replay changed the databases:\nbefore %q\nafter  %q", before, after)
	}
}

// restartIs reports whether each line of got starts with the
// corresponding prefix of want.
func restartIs(got, want []string) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if !strings.HasPrefix(got[i], want[i]) {
			return false
		}
	}
	return true
}

// dataState lists what replay must leave as it is: the participant's
// events, the prepared transactions and the markers.
func dataState(t *testing.T, logPool, dataPool *pgxpool.Pool) []string {
	t.Helper()
	ctx := context.Background()
	var out []string
	err := logstore.New(logPool).Scan(ctx, api.ParticipantName(0), func(rec logstore.Record) error {
		out = append(out, "event "+string(rec.Payload))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"SELECT 'prepared ' || gid FROM pg_prepared_xacts WHERE database = current_database() ORDER BY gid", "SELECT 'marker ' || gid FROM tpcd_markers ORDER BY gid"} {
		rows, err := dataPool.Query(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		list, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, list...)
	}
	return out
}
