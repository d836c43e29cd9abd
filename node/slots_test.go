package node_test

import (
	"context"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/internal/pgtest"
	"github.com/tpcd/tpcd/internal/testbin"
	"github.com/tpcd/tpcd/internal/testcluster"
	"github.com/tpcd/tpcd/logstore"
	"github.com/tpcd/tpcd/metrics"
	"github.com/tpcd/tpcd/node"
	"github.com/tpcd/tpcd/replay"
	"github.com/tpcd/tpcd/rpc"
)

// TestSlotsInOneProcess runs two coordinators that serve one cluster at
// once (two slots of one log) and two participants with an engine per
// slot, all in this process, so that the race detector watches the
// routing between them. Clients call both coordinators, with keys and
// without, and ask each about the other's transactions; every commit is
// on both participants, and each slot's ids are its own.
func TestSlotsInOneProcess(t *testing.T) {
	ctx := t.Context()
	logger := testcluster.Logger(t)
	logDBs := testcluster.Open(t, node.DatabaseSpec{LogURI: pgtest.NewDB(t), Logger: logger})
	if err := node.AgreeSlots(ctx, logDBs.Log, 2, logger); err != nil {
		t.Fatal(err)
	}
	coordLns := []net.Listener{testbin.Listen(t), testbin.Listen(t)}
	partLns := []net.Listener{testbin.Listen(t), testbin.Listen(t)}
	coordAddrs := []string{coordLns[0].Addr().String(), coordLns[1].Addr().String()}
	partAddrs := []string{partLns[0].Addr().String(), partLns[1].Addr().String()}

	var data, partLogs []*pgxpool.Pool
	var parts []*node.Participant
	// Participant 0's metrics count what every slot's engine does.
	reg := prometheus.NewRegistry()
	observed := metrics.NewParticipant(reg)
	for i, ln := range partLns {
		var observer node.Observer
		if i == 0 {
			observer = observed
		}
		dbs := testcluster.Open(t, node.DatabaseSpec{LogURI: pgtest.NewDB(t), DataURI: pgtest.NewDB(t), NeedData: true, Logger: logger, MaxConns: 30})
		if _, err := dbs.Data.Exec(ctx, "CREATE TABLE kv (k int PRIMARY KEY, v text)"); err != nil {
			t.Fatal(err)
		}
		data = append(data, dbs.Data)
		partLogs = append(partLogs, dbs.Log)
		p, err := node.StartParticipant(ctx, ln, node.ParticipantOptions{ID: engine.NodeID(i), Coordinator: coordAddrs[0], Standbys: coordAddrs[1:],
			Log: dbs.Log, Data: dbs.Data, Logger: logger, Slots: 2, Observer: observer})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		parts = append(parts, p)
	}
	for s, ln := range coordLns {
		lease, err := node.HoldLease(ctx, logDBs.Log, node.LeaseOptions{TTL: 5 * time.Second, Holder: coordAddrs[s], Logger: logger, Slots: []int{s}})
		if err != nil {
			t.Fatal(err)
		}
		c, err := node.StartCoordinator(ctx, ln, node.CoordinatorOptions{Participants: partAddrs, Log: logDBs.Log, Logger: logger,
			Lease: lease, Slot: s, Slots: 2, Address: coordAddrs[s]})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			c.Close()
			lease.Release(context.Background())
		})
	}
	clients := []*rpc.Client{rpc.NewClient(coordAddrs[0], rpc.ClientOptions{Stream: true}), rpc.NewClient(coordAddrs[1], rpc.ClientOptions{})}
	for _, c := range clients {
		t.Cleanup(func() { c.Close() })
	}

	// Eight clients, four at each coordinator, half of their transactions
	// with a key; each then asks the other coordinator about it.
	var committed atomic.Int64
	var inSlot [2]atomic.Int64
	concurrently(8, func(w int) {
		at, other := clients[w%2], clients[1-w%2]
		for i := range 15 {
			k := w*100 + i
			p := api.TransactParams{Commit: true}
			if i%2 == 0 {
				p.Key = "slots-" + strconv.Itoa(k)
			}
			for n := range 2 {
				nid := engine.NodeID(n)
				p.Statements = append(p.Statements, api.StatementParams{Node: &nid, SQL: "INSERT INTO kv VALUES ($1, 'x')", Args: []any{k}})
			}
			var r api.TransactReply
			if err := at.Call(ctx, api.MethodTransact, p, &r); err != nil || r.Outcome == nil || *r.Outcome != engine.OutcomeCommit {
				t.Errorf("transact %d: %v %+v", k, err, r)
				return
			}
			slot := api.SlotOfTx(r.TxID)
			if p.Key != "" && slot != api.SlotOfKey(p.Key, 2) || p.Key == "" && slot != w%2 {
				t.Errorf("transaction %d (key %q, at coordinator %d) is of slot %d", r.TxID, p.Key, w%2, slot)
			}
			committed.Add(1)
			inSlot[slot].Add(1)
			var st engine.StatusReply
			if err := other.Call(ctx, api.MethodStatus, api.StatusParams{TxID: r.TxID}, &st); err != nil || st.Outcome != engine.OutcomeCommit {
				t.Errorf("status of %d at the other coordinator: %v %+v", r.TxID, err, st)
			}
			if p.Key != "" {
				var again api.TransactReply
				if err := other.Call(ctx, api.MethodTransact, p, &again); err != nil || !again.Repeated || again.TxID != r.TxID {
					t.Errorf("transact %d repeated with its key at the other coordinator: %v %+v", k, err, again)
				}
			}
		}
	})
	if inSlot[0].Load() == 0 || inSlot[1].Load() == 0 {
		t.Fatalf("commits by slot: %d, %d; want both", inSlot[0].Load(), inSlot[1].Load())
	}
	for i, pool := range data {
		testcluster.Eventually(t, "participant "+strconv.Itoa(i)+" holds every commit, nothing prepared", func() bool {
			var rows, prepared int64
			pool.QueryRow(ctx, "SELECT count(*) FROM kv").Scan(&rows)
			pool.QueryRow(ctx, "SELECT count(*) FROM pg_prepared_xacts").Scan(&prepared)
			return rows == committed.Load() && prepared == 0
		})
	}

	// Its metrics count both slots' work: every statement it received
	// and every commit of its branches (counted once durable in its log).
	testcluster.Eventually(t, "participant 0's metrics count both slots' commits", func() bool {
		return testcluster.Counter(t, reg, "tpcd_participant_outcomes_total", "outcome", "commit") == float64(committed.Load())
	})
	if got := testcluster.Counter(t, reg, "tpcd_statements_total"); got != float64(committed.Load()) {
		t.Errorf("participant 0 counted %v statements; want %d, of both slots", got, committed.Load())
	}

	// A participant counts what it holds of every slot: an open
	// transaction of slot 1 shows in participant 0's snapshot (the
	// metrics, and the wait of tpcd probe --until-settled, read it).
	zero := engine.NodeID(0)
	var ex engine.ExecReply
	if err := clients[1].Call(ctx, api.MethodExec, api.ExecParams{Node: &zero, SQL: "INSERT INTO kv VALUES (100000, 'open')"}, &ex); err != nil || api.SlotOfTx(ex.TxID) != 1 {
		t.Fatalf("exec at coordinator 1: %v, tx %d", err, ex.TxID)
	}
	if snap, err := parts[0].Snapshot(ctx); err != nil || snap.Open != 1 {
		t.Fatalf("participant 0's snapshot with slot 1's transaction open: %+v, %v; want it counted", snap, err)
	}
	if err := clients[0].Call(ctx, api.MethodRollback, api.TxParams{TxID: ex.TxID}, nil); err != nil {
		t.Fatalf("rollback of slot 1's transaction at coordinator 0: %v", err)
	}

	// Replay reads a participant's engine of each slot and checks each
	// against the data database, which holds both slots' work.
	rep, err := replay.Run(ctx, replay.Options{Log: partLogs[0], Data: data[0], Node: "participant-0", LazyPrepared: true})
	if err != nil || !rep.Consistent() || len(rep.Nodes) != 1 {
		t.Fatalf("replay of participant-0 with its data: %v, %+v", err, rep)
	}
	rep, err = replay.Run(ctx, replay.Options{Log: partLogs[0], Data: data[0], Node: "participant-0.1", LazyPrepared: true})
	if err != nil || !rep.Consistent() || len(rep.Nodes) != 1 || api.SlotOfCluster(rep.Nodes[0].Cluster) != 1 {
		t.Fatalf("replay of participant-0.1 with its data: %v, %+v", err, rep)
	}
	// Without a node named: the log holds one participant, in two slots.
	rep, err = replay.Run(ctx, replay.Options{Log: partLogs[1], Data: data[1], LazyPrepared: true})
	if err != nil || !rep.Consistent() || len(rep.Nodes) != 2 || rep.Nodes[1].Node != "participant-1.1" {
		t.Fatalf("replay of participant 1's log with its data: %v, %+v", err, rep)
	}
}

// TestStandbyAnnouncesItself: a coordinator waiting for a slot with
// Announce says so in the log while it waits (a coordinator serving the
// slot as an adopted one hands it back), and withdraws once it holds a
// slot or stops waiting.
func TestStandbyAnnouncesItself(t *testing.T) {
	ctx := t.Context()
	logger := testcluster.Logger(t)
	log := testcluster.Open(t, node.DatabaseSpec{LogURI: pgtest.NewDB(t), Logger: logger}).Log
	store := logstore.New(log)
	ttl := time.Second
	held, err := node.HoldLease(ctx, log, node.LeaseOptions{TTL: ttl, Holder: "a", Logger: logger, Slots: []int{0}})
	if err != nil {
		t.Fatal(err)
	}
	waitsFor := func(slot int) bool {
		w, err := store.StandbyWaitsFor(ctx, slot, 0)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	announced := func() (n int) {
		if err := log.QueryRow(ctx, "SELECT count(*) FROM tpcd_standbys WHERE expires_at > now()").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	// b waits for slot 0 until a releases it; c waits for slot 0 too,
	// until it gives up.
	bHeld := make(chan *node.Lease, 1)
	go func() {
		l, err := node.HoldLease(ctx, log, node.LeaseOptions{TTL: ttl, Holder: "b", Logger: logger, Slots: []int{0}, Announce: true})
		if err != nil {
			t.Error(err)
		}
		bHeld <- l
	}()
	cctx, stopC := context.WithCancel(ctx)
	cDone := make(chan struct{})
	go func() {
		defer close(cDone)
		node.HoldLease(cctx, log, node.LeaseOptions{TTL: ttl, Holder: "c", Logger: logger, Slots: []int{0}, Announce: true})
	}()
	testcluster.Eventually(t, "b and c announced", func() bool { return announced() == 2 })
	if !waitsFor(0) || waitsFor(1) {
		t.Fatalf("standbys of slot 0: waiting for slot 0 %v, for slot 1 %v", waitsFor(0), waitsFor(1))
	}
	stopC()
	<-cDone
	testcluster.Eventually(t, "c withdrew", func() bool { return announced() == 1 })
	if !waitsFor(0) {
		t.Fatal("c's withdrawal took b's announcement with it")
	}
	if err := held.Release(ctx); err != nil {
		t.Fatal(err)
	}
	b := <-bHeld
	if b == nil {
		t.Fatal("b took no lease")
	}
	defer b.Release(context.Background())
	testcluster.Eventually(t, "no announcement left once b holds the slot and c stopped waiting", func() bool { return announced() == 0 })
}
