package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/internal/testbin"
	"github.com/tpcd/tpcd/internal/testcluster"
	"github.com/tpcd/tpcd/logstore"
	"github.com/tpcd/tpcd/node"
	"github.com/tpcd/tpcd/rpc"
)

func TestCommitAcrossThreeParticipants(t *testing.T) {
	c := startCluster(t, clusterConfig{participants: 3})
	tx := c.Begin()
	for i := range 3 {
		r := c.Exec(tx, i, "INSERT INTO kv VALUES ($1, $2)", 10+i, "v")
		if r.Result.RowsAffected != 1 {
			t.Fatalf("node %d: rows affected %d, want 1", i, r.Result.RowsAffected)
		}
	}
	c.CommitApplied(tx)
	c.Settled()
	for i := range 3 {
		if got := c.Keys(i); !slices.Equal(got, []int{10 + i}) {
			t.Errorf("node %d has keys %v, want [%d]", i, got, 10+i)
		}
	}

	// A query returns rows through the coordinator.
	tx = c.Begin()
	r := c.Exec(tx, 1, "SELECT k, v FROM kv")
	if !slices.Equal(r.Result.Columns, []string{"k", "v"}) || len(r.Result.Rows) != 1 || r.Result.Rows[0][0] != "11" {
		t.Fatalf("select returned %+v", r.Result)
	}
	if r := c.Commit(tx); r.Outcome != engine.OutcomeCommit {
		t.Fatalf("read-only commit: %s (%s)", r.Outcome, r.Reason)
	}
}

func TestFailingStatementAbortsEverywhere(t *testing.T) {
	c := startCluster(t, clusterConfig{participants: 3})
	c.Exec1(2, "INSERT INTO kv VALUES (1, 'taken')")

	for _, bad := range []struct{ name, sql string }{
		{"duplicate key", "INSERT INTO kv VALUES (1, 'again')"},
		{"syntax error", "INSERT INTO kv VALUEZ (7)"},
		{"constraint", "INSERT INTO kv VALUES (NULL, 'x')"},
	} {
		t.Run(bad.name, func(t *testing.T) {
			tx := c.Begin()
			c.Exec(tx, 0, "INSERT INTO kv VALUES (100, 'a')")
			c.Exec(tx, 1, "INSERT INTO kv VALUES (100, 'b')")
			_, err := c.TryExec(tx, 2, bad.sql)
			if rpcCode(err) != rpc.CodeAborted {
				t.Fatalf("failing statement: err %v, want code %d", err, rpc.CodeAborted)
			}
			// Further work is refused with the reason.
			if _, err := c.TryExec(tx, 0, "INSERT INTO kv VALUES (101, 'c')"); rpcCode(err) != rpc.CodeAborted {
				t.Fatalf("exec after failure: %v", err)
			}
			r := c.Commit(tx)
			if r.Outcome != engine.OutcomeAbort || !strings.Contains(r.Reason, "p2") {
				t.Fatalf("commit: %s (%q), want abort naming p2", r.Outcome, r.Reason)
			}
			c.Settled()
			for i := range 2 {
				if got := c.Keys(i); len(got) != 0 {
					t.Fatalf("node %d kept rows %v of an aborted transaction", i, got)
				}
			}
		})
	}
}

func TestParticipantDownBeforePrepare(t *testing.T) {
	c := startCluster(t, clusterConfig{participants: 2, engine: engine.CoordinatorConfig{VoteTimeout: time.Second}})
	tx := c.Begin()
	c.Exec(tx, 0, "INSERT INTO kv VALUES (1, 'a')")
	c.Exec(tx, 1, "INSERT INTO kv VALUES (1, 'b')")
	c.StopParticipant(1)
	r := c.Commit(tx)
	if r.Outcome != engine.OutcomeAbort {
		t.Fatalf("outcome %s, want abort", r.Outcome)
	}
	t.Logf("abort reason: %s", r.Reason)
	c.StartParticipant(1)
	c.Settled()
	for i := range 2 {
		if got := c.Keys(i); len(got) != 0 {
			t.Fatalf("node %d has %v after abort", i, got)
		}
	}
}

// TestVoteTimeout makes a participant address that accepts connections and
// never answers, so the coordinator hears nothing and must abort after
// --timeout.
func TestVoteTimeout(t *testing.T) {
	c := startCluster(t, clusterConfig{participants: 2, engine: engine.CoordinatorConfig{VoteTimeout: 500 * time.Millisecond}})
	tx := c.Begin()
	c.Exec(tx, 0, "INSERT INTO kv VALUES (1, 'a')")
	c.Exec(tx, 1, "INSERT INTO kv VALUES (1, 'b')")
	// Swap participant 1 for a black hole on its address.
	c.StopParticipant(1)
	hole, err := net.Listen("tcp", c.PartAddrs[1])
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	go func() {
		for {
			conn, err := hole.Accept()
			if err != nil {
				return
			}
			held = append(held, conn)
		}
	}()
	r := c.Commit(tx)
	if r.Outcome != engine.OutcomeAbort || !strings.Contains(r.Reason, "vote timeout") {
		t.Fatalf("commit: %s (%q), want abort by vote timeout", r.Outcome, r.Reason)
	}
	hole.Close()
	for _, conn := range held {
		conn.Close()
	}
	c.StartParticipant(1)
	c.Settled()
	if got := c.Keys(0); len(got) != 0 {
		t.Fatalf("node 0 kept %v", got)
	}
}

func TestManyConcurrentTransactions(t *testing.T) {
	// Every transaction must commit, so no timeout may fire: on a loaded
	// 2-core machine with the race detector a vote can take seconds.
	c := startCluster(t, clusterConfig{participants: 3, engine: engine.CoordinatorConfig{VoteTimeout: 2 * time.Minute, ExecTimeout: 2 * time.Minute}})
	clients := make([]*rpc.Client, 4)
	for i := range clients {
		clients[i] = rpc.NewClient(c.CoordAddr, rpc.ClientOptions{})
		defer clients[i].Close()
	}
	const n = 64
	var committed atomic.Int64
	want := make([][]int, 3)
	outcome := make([]engine.Outcome, n)
	nodesOf := make([][]int, n)
	concurrently(n, func(i int) {
		cl := clients[i%len(clients)]
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		var b engine.BeginReply
		if err := cl.Call(ctx, api.MethodBegin, struct{}{}, &b); err != nil {
			t.Errorf("begin: %v", err)
			return
		}
		a, z := engine.NodeID(i%3), engine.NodeID((i+1)%3)
		nodesOf[i] = []int{int(a), int(z)}
		for _, nd := range []engine.NodeID{a, z} {
			if err := cl.Call(ctx, api.MethodExec, api.ExecParams{TxID: b.TxID, Node: &nd, SQL: "INSERT INTO kv VALUES ($1, 'x')", Args: []any{1000 + i}}, nil); err != nil {
				t.Errorf("exec: %v", err)
				return
			}
		}
		var r engine.OutcomeReply
		if err := cl.Call(ctx, api.MethodCommit, api.TxParams{TxID: b.TxID}, &r); err != nil {
			t.Errorf("commit: %v", err)
			return
		}
		outcome[i] = r.Outcome
		if r.Outcome == engine.OutcomeCommit {
			committed.Add(1)
		} else {
			t.Logf("tx %d aborted: %s", b.TxID, r.Reason)
		}
	})
	for i := range n {
		if outcome[i] == engine.OutcomeCommit {
			for _, nd := range nodesOf[i] {
				want[nd] = append(want[nd], 1000+i)
			}
		}
	}
	if committed.Load() != n {
		t.Errorf("%d of %d committed; with distinct keys all should", committed.Load(), n)
	}
	c.Settled()
	for nd := range 3 {
		slices.Sort(want[nd])
		if got := c.Keys(nd); !slices.Equal(got, want[nd]) {
			t.Errorf("node %d: keys %v, want %v", nd, got, want[nd])
		}
	}
}

func TestDistributedDeadlockEndsInAbort(t *testing.T) {
	c := startCluster(t, clusterConfig{participants: 2, lockTimeout: 300 * time.Millisecond})
	c.Exec1(0, "INSERT INTO kv VALUES (1, 'x')")
	c.Exec1(1, "INSERT INTO kv VALUES (1, 'x')")
	a, b := c.Begin(), c.Begin()
	c.Exec(a, 0, "UPDATE kv SET v = 'a' WHERE k = 1")
	c.Exec(b, 1, "UPDATE kv SET v = 'b' WHERE k = 1")
	// Now each takes the other's lock: a waits on node 1, b on node 0.
	errs := make([]error, 2)
	concurrently(2, func(i int) {
		if i == 0 {
			_, errs[0] = c.TryExec(a, 1, "UPDATE kv SET v = 'a' WHERE k = 1")
		} else {
			_, errs[1] = c.TryExec(b, 0, "UPDATE kv SET v = 'b' WHERE k = 1")
		}
	})
	if errs[0] == nil && errs[1] == nil {
		t.Fatal("both sides of a deadlock succeeded")
	}
	outcomes := []engine.Outcome{c.Commit(a).Outcome, c.Commit(b).Outcome}
	aborts := 0
	for _, o := range outcomes {
		if o == engine.OutcomeAbort {
			aborts++
		}
	}
	if aborts == 0 {
		t.Fatalf("outcomes %v: at least one must abort", outcomes)
	}
	c.Settled()
	// Both nodes agree on the value: whoever committed wrote both.
	var v0, v1 string
	c.Data[0].QueryRow(context.Background(), "SELECT v FROM kv WHERE k = 1").Scan(&v0)
	c.Data[1].QueryRow(context.Background(), "SELECT v FROM kv WHERE k = 1").Scan(&v1)
	if v0 != v1 {
		t.Fatalf("node 0 has %q, node 1 has %q: a transaction committed on one node only", v0, v1)
	}
}

func TestSeedBatchMode(t *testing.T) {
	// The flush interval is long enough that three sequential executes
	// always land in one batch, even on a loaded machine; the partial batch
	// at the end waits for it.
	c := startCluster(t, clusterConfig{participants: 3, engine: engine.CoordinatorConfig{BatchSize: 3, BatchFlush: 10 * time.Second}})
	txs := map[engine.TxID]int{}
	for i := range 9 {
		nd := engine.NodeID(i % 3)
		var r engine.ExecReply
		if err := c.Call(api.MethodExecute, api.ExecuteParams{Node: &nd, SQL: "INSERT INTO kv VALUES ($1, 'b')", Args: []any{i}}, &r); err != nil {
			t.Fatalf("execute %d: %v", i, err)
		}
		txs[r.TxID]++
	}
	if len(txs) != 3 {
		t.Fatalf("9 executes with batch size 3 made transactions %v, want 3 of 3", txs)
	}
	for tx, n := range txs {
		if n != 3 {
			t.Fatalf("transaction %d got %d statements, want 3", tx, n)
		}
		testcluster.Eventually(t, "batch committed", func() bool { return c.Status(tx).Outcome == engine.OutcomeCommit })
	}
	// A partial batch is committed by the flush interval.
	nd := engine.NodeID(0)
	var r engine.ExecReply
	if err := c.Call(api.MethodExecute, api.ExecuteParams{Node: &nd, SQL: "INSERT INTO kv VALUES (99, 'partial')"}, &r); err != nil {
		t.Fatal(err)
	}
	testcluster.Eventually(t, "partial batch flushed", func() bool { return c.Status(r.TxID).Outcome == engine.OutcomeCommit })
	c.Settled()
	if got := c.Keys(0); !slices.Equal(got, []int{0, 3, 6, 99}) {
		t.Fatalf("node 0 keys %v", got)
	}
}

// TestBadInputIsRefused sends hostile requests to the coordinator's port
// while a valid transaction is open, and checks the transaction still
// commits.
func TestBadInputIsRefused(t *testing.T) {
	c := startCluster(t, clusterConfig{participants: 2})
	tx := c.Begin()
	c.Exec(tx, 0, "INSERT INTO kv VALUES (5, 'ok')")

	url := "http://" + c.CoordAddr + "/rpc"
	post := func(body []byte) (int, int) {
		resp, err := http.Post(url, "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var w struct {
			Error *struct {
				Code int `json:"code"`
			} `json:"error"`
		}
		if err := json.Unmarshal(raw, &w); err != nil || w.Error == nil {
			t.Fatalf("body %q: want a JSON-RPC error (%v)", raw, err)
		}
		return resp.StatusCode, w.Error.Code
	}
	req := func(method, params string) []byte {
		return []byte(`{"jsonrpc":"2.0","id":1,"method":"` + method + `","params":` + params + `}`)
	}
	cases := []struct {
		name string
		body []byte
		code int
	}{
		{"malformed json", []byte(`{"jsonrpc":"2.0","id":1,"method":`), rpc.CodeParseError},
		{"unknown method", req("drop_everything", `{}`), rpc.CodeMethodNotFound},
		{"wrong type", req("exec", `{"tx":"one","node":0,"sql":"x"}`), rpc.CodeInvalidParams},
		{"unknown field", req("commit", `{"tx":1,"force":true}`), rpc.CodeInvalidParams},
		{"missing node", req("exec", `{"tx":1,"sql":"select 1"}`), rpc.CodeInvalidParams},
		{"unknown txid", req("commit", `{"tx":987654}`), rpc.CodeUnknownTx},
		{"node out of range", req("exec", `{"tx":1,"node":7,"sql":"select 1"}`), rpc.CodeBadNode},
		{"negative node", req("exec", `{"tx":1,"node":-1,"sql":"select 1"}`), rpc.CodeBadNode},
		{"huge number", req("status", `{"tx":1e400}`), rpc.CodeInvalidParams},
		{"negative txid", req("status", `{"tx":-3}`), rpc.CodeInvalidParams},
		{"forged vote from a stranger", req("tpcd.vote", `{"from":9,"tx":1,"vote":"yes"}`), 0},
		{"oversized", req("exec", `{"tx":1,"node":0,"sql":"`+strings.Repeat("x", 2<<20)+`"}`), rpc.CodeInvalidRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.code == 0 {
				// Accepted at the transport and ignored by the engine.
				resp, err := http.Post(url, "application/json", bytes.NewReader(tc.body))
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				return
			}
			_, code := post(tc.body)
			if code != tc.code {
				t.Fatalf("code %d, want %d", code, tc.code)
			}
		})
	}
	c.Exec(tx, 1, "INSERT INTO kv VALUES (5, 'ok')")
	if r := c.Commit(tx); r.Outcome != engine.OutcomeCommit {
		t.Fatalf("valid transaction after bad input: %s (%s)", r.Outcome, r.Reason)
	}
	c.Settled()
	for i := range 2 {
		if got := c.Keys(i); !slices.Equal(got, []int{5}) {
			t.Fatalf("node %d keys %v", i, got)
		}
	}
}

// TestCoordinatorRestartKeepsIDsAndAnswers restarts the coordinator on the
// same log: transaction ids are not reused and ended outcomes survive.
func TestCoordinatorRestart(t *testing.T) {
	c := startCluster(t, clusterConfig{participants: 2})
	tx := c.Begin()
	c.Exec(tx, 0, "INSERT INTO kv VALUES (1, 'a')")
	c.Exec(tx, 1, "INSERT INTO kv VALUES (1, 'a')")
	if r := c.Commit(tx); r.Outcome != engine.OutcomeCommit {
		t.Fatal(r)
	}
	open := c.Begin()
	c.Exec(open, 0, "INSERT INTO kv VALUES (2, 'never')")
	epoch := c.Coord.Epoch()
	c.RestartCoordinator()
	if c.Coord.Epoch() != epoch+1 {
		t.Fatalf("epoch %d after restart, want %d", c.Coord.Epoch(), epoch+1)
	}
	next := c.Begin()
	if next <= open {
		t.Fatalf("transaction id %d reused after restart (last was %d)", next, open)
	}
	// The open transaction's work is rolled back once the participant
	// hears from the new epoch.
	c.Exec(next, 0, "INSERT INTO kv VALUES (3, 'b')")
	if r := c.Commit(next); r.Outcome != engine.OutcomeCommit {
		t.Fatal(r)
	}
	c.Settled()
	if got := c.Keys(0); !slices.Equal(got, []int{1, 3}) {
		t.Fatalf("node 0 keys %v, want [1 3]", got)
	}
}

// An exec without a transaction id begins one: the reply names it and the
// transaction goes on as any other. A failing first statement leaves nothing
// behind: the coordinator rolls the transaction back at once, since the
// client never learned its id.
func TestExecWithoutTransactionBeginsOne(t *testing.T) {
	c := startCluster(t, clusterConfig{participants: 2})
	c.Exec1(1, "INSERT INTO kv VALUES (1, 'taken')")

	r := c.Exec(0, 0, "INSERT INTO kv VALUES (10, 'a')")
	if r.TxID == 0 {
		t.Fatalf("exec without tx: reply %+v names no transaction", r)
	}
	c.Exec(r.TxID, 1, "INSERT INTO kv VALUES (10, 'b')")
	if out := c.Commit(r.TxID); out.Outcome != engine.OutcomeCommit {
		t.Fatalf("commit %d: %+v", r.TxID, out)
	}
	c.Settled()
	for i, want := range [][]int{{10}, {1, 10}} {
		if got := c.Keys(i); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("node %d: keys %v, want %v", i, got, want)
		}
	}

	_, err := c.TryExec(0, 1, "INSERT INTO kv VALUES (1, 'again')")
	if rpcCode(err) != rpc.CodeAborted || !strings.Contains(err.Error(), "rolled back") {
		t.Fatalf("failing first statement: %v, want code %d saying the transaction was rolled back", err, rpc.CodeAborted)
	}
	// The coordinator decided the transaction itself: its status is abort
	// (aborting until the participant acknowledges), not active waiting
	// for an idle timeout.
	var failed engine.TxID
	msg := err.Error()
	if _, serr := fmt.Sscanf(msg[strings.LastIndex(msg, "(transaction "):], "(transaction %d rolled back)", &failed); serr != nil || failed <= r.TxID {
		t.Fatalf("error %q does not name the new transaction (%v)", msg, serr)
	}
	if st := c.Status(failed); st.Outcome != engine.OutcomeAbort {
		t.Fatalf("status of %d after its first statement failed: %+v, want the abort decided", failed, st)
	}
	// The participant's open data transaction is rolled back, not left for
	// an idle timeout.
	testcluster.Eventually(t, "node 1 has no open data transaction", func() bool {
		var open int
		if err := c.Data[1].QueryRow(context.Background(),
			"SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state LIKE 'idle in transaction%'").Scan(&open); err != nil {
			t.Fatal(err)
		}
		return open == 0
	})
}

// A coordinator without a lease does not start on a log whose slot a
// coordinator with one holds (tpcd coordinator --lease): its appends
// would not be fenced. Once that lease has expired, it starts, and fences
// the old holder out.
func TestCoordinatorWithoutLeaseRefusesAHeldSlot(t *testing.T) {
	c := startCluster(t, clusterConfig{participants: 1})
	c.StopCoordinator()
	store := logstore.New(c.CoordOpts.Log)
	if _, taken, _, err := store.TakeLease(t.Context(), api.CoordinatorName, "other:9990", time.Hour); err != nil || !taken {
		t.Fatalf("take the lease: %v, %v", taken, err)
	}
	_, err := node.StartCoordinator(t.Context(), testbin.Listen(t), c.CoordOpts)
	if err == nil || !strings.Contains(err.Error(), "other:9990") || !strings.Contains(err.Error(), "--lease") {
		t.Fatalf("start beside a held lease: %v; want a refusal naming the holder and --lease", err)
	}
	if _, err := c.CoordOpts.Log.Exec(t.Context(), "UPDATE tpcd_leases SET expires_at = now() - interval '1 second'"); err != nil {
		t.Fatal(err)
	}
	c.StartCoordinator()
	// It took the expired slot over, for no time: the old holder is
	// fenced out, and a standby may take it at once.
	l, _, err := store.LeaseOf(t.Context(), api.CoordinatorName)
	if err != nil || l.Generation != 2 || l.Remaining > 0 || !strings.Contains(l.Holder, "(no lease)") {
		t.Fatalf("the slot after a start without a lease: %+v, %v; want generation 2, expired, held by no lease", l, err)
	}
}
