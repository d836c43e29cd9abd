package replay_test

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/internal/pgtest"
	"github.com/tpcd/tpcd/internal/testbin"
	"github.com/tpcd/tpcd/logstore"
	"github.com/tpcd/tpcd/node"
	"github.com/tpcd/tpcd/replay"
	"github.com/tpcd/tpcd/rpc"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/replay")

// tpcdBin is the tpcd binary built for the tests that run the command.
var tpcdBin string

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(testbin.Main(&tpcdBin, func() int { return pgtest.Main(m) }))
}

// cluster is a coordinator and participants in this process, each node
// with its own log database (and data database) on the shared test server,
// talking JSON-RPC over loopback, as separate tpcd processes would.
type cluster struct {
	t       *testing.T
	logger  *slog.Logger
	compact time.Duration
	// The ports are held for the whole test: a node restarted on its
	// port gets it back (testbin.Port).
	coordPort *testbin.Port
	coordAddr string
	coordDBs  *node.Databases
	coord     *node.Coordinator
	partPorts []*testbin.Port
	partAddrs []string
	partDBs   []*node.Databases
	parts     []*node.Participant
	client    *rpc.Client
	// began are the transactions begun through begin, which settled waits
	// for.
	began []engine.TxID
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func openDBs(t *testing.T, spec node.DatabaseSpec) *node.Databases {
	t.Helper()
	dbs, err := node.OpenDatabases(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dbs.Close() })
	return dbs
}

// startCluster starts n participants and a coordinator and creates the
// table kv (k int primary key, v text) on every participant. compact is
// the nodes' CompactEvery (negative: never).
func startCluster(t *testing.T, n int, compact time.Duration) *cluster {
	t.Helper()
	c := &cluster{
		t:       t,
		logger:  slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
		compact: compact,
	}
	c.coordDBs = openDBs(t, node.DatabaseSpec{LogURI: pgtest.NewDB(t), Logger: c.logger})
	for range n {
		c.partDBs = append(c.partDBs, openDBs(t, node.DatabaseSpec{
			LogURI: pgtest.NewDB(t), DataURI: pgtest.NewDB(t), NeedData: true, Logger: c.logger, MaxConns: 20,
		}))
	}
	c.coordPort, c.partPorts = testbin.HoldPort(t), testbin.HoldPorts(t, n)
	c.coordAddr, c.partAddrs = c.coordPort.Addr, testbin.Addrs(c.partPorts)
	c.parts = make([]*node.Participant, n)
	for i := range n {
		c.startParticipant(i)
	}
	c.startCoordinator()
	c.client = rpc.NewClient(c.coordAddr, rpc.ClientOptions{})
	t.Cleanup(func() {
		c.client.Close()
		c.stop()
	})
	for i := range n {
		tx := c.begin()
		c.exec(tx, i, "CREATE TABLE kv (k int PRIMARY KEY, v text)")
		c.mustCommit(tx)
	}
	// A commit is answered once decided; the tables exist once applied.
	c.settled()
	return c
}

func (c *cluster) startCoordinator() {
	c.t.Helper()
	coord, err := node.StartCoordinator(context.Background(), c.coordPort.Lend(), node.CoordinatorOptions{
		Participants: c.partAddrs, Log: c.coordDBs.Log, Logger: c.logger, CompactEvery: c.compact,
		Engine: engine.CoordinatorConfig{RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond},
	})
	if err != nil {
		c.t.Fatal(err)
	}
	c.coord = coord
}

func (c *cluster) startParticipant(i int) {
	c.t.Helper()
	p, err := node.StartParticipant(context.Background(), c.partPorts[i].Lend(), node.ParticipantOptions{
		ID: engine.NodeID(i), Coordinator: c.coordAddr, Log: c.partDBs[i].Log, Data: c.partDBs[i].Data,
		Logger: c.logger, CompactEvery: c.compact, KeepEnded: time.Millisecond,
		Engine: engine.ParticipantConfig{InquireAfter: 100 * time.Millisecond, RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond},
	})
	if err != nil {
		c.t.Fatal(err)
	}
	c.parts[i] = p
}

func (c *cluster) stopCoordinator() {
	if c.coord != nil {
		c.coord.Close()
		c.coord = nil
	}
}

func (c *cluster) stopParticipant(i int) {
	if c.parts[i] != nil {
		c.parts[i].Close()
		c.parts[i] = nil
	}
}

// stop closes every node; the databases stay.
func (c *cluster) stop() {
	c.stopCoordinator()
	for i := range c.parts {
		c.stopParticipant(i)
	}
}

func (c *cluster) call(method string, params, result any) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return c.client.Call(ctx, method, params, result)
}

func (c *cluster) begin() engine.TxID {
	c.t.Helper()
	var r engine.BeginReply
	if err := c.call(api.MethodBegin, struct{}{}, &r); err != nil {
		c.t.Fatalf("begin: %v", err)
	}
	c.began = append(c.began, r.TxID)
	return r.TxID
}

func (c *cluster) tryExec(tx engine.TxID, n int, sql string, args ...any) error {
	id := engine.NodeID(n)
	var r engine.ExecReply
	return c.call(api.MethodExec, api.ExecParams{TxID: tx, Node: &id, SQL: sql, Args: args}, &r)
}

func (c *cluster) exec(tx engine.TxID, n int, sql string, args ...any) {
	c.t.Helper()
	if err := c.tryExec(tx, n, sql, args...); err != nil {
		c.t.Fatalf("exec tx %d on %d: %v", tx, n, err)
	}
}

func (c *cluster) commit(tx engine.TxID) engine.OutcomeReply {
	c.t.Helper()
	var r engine.OutcomeReply
	if err := c.call(api.MethodCommit, api.TxParams{TxID: tx}, &r); err != nil {
		c.t.Fatalf("commit %d: %v", tx, err)
	}
	return r
}

func (c *cluster) mustCommit(tx engine.TxID) {
	c.t.Helper()
	if r := c.commit(tx); r.Outcome != engine.OutcomeCommit {
		c.t.Fatalf("tx %d: %s (%s)", tx, r.Outcome, r.Reason)
	}
}

func (c *cluster) rollback(tx engine.TxID) {
	c.t.Helper()
	var r engine.OutcomeReply
	if err := c.call(api.MethodRollback, api.TxParams{TxID: tx}, &r); err != nil {
		c.t.Fatalf("rollback %d: %v", tx, err)
	}
}

// logRef is one node's log, with the data database of a participant.
type logRef struct {
	node    string
	log     *pgxpool.Pool
	logURI  string
	data    *pgxpool.Pool
	dataURI string
}

func (c *cluster) logs() []logRef {
	out := []logRef{{node: api.CoordinatorName, log: c.coordDBs.Log, logURI: c.coordDBs.LogURI}}
	for i, d := range c.partDBs {
		out = append(out, logRef{node: api.ParticipantName(engine.NodeID(i)), log: d.Log, logURI: d.LogURI, data: d.Data, dataURI: d.DataURI})
	}
	return out
}

// replayOf replays one node's log (with its data database for a
// participant).
func replayOf(t *testing.T, l logRef, opts replay.Options) *replay.Report {
	t.Helper()
	opts.Log, opts.Data = l.log, l.data
	rep, err := replay.Run(context.Background(), opts)
	if err != nil {
		t.Fatalf("replay %s: %v", l.node, err)
	}
	return rep
}

// settled waits until no node holds a transaction in memory and nothing
// is left prepared, judged by replaying every log.
func (c *cluster) settled() {
	c.t.Helper()
	// The coordinator first: until every participant has acknowledged, its
	// log may not yet show the decision (an abort is logged lazily) while
	// the participants' logs already look finished.
	eventually(c.t, "the coordinator ended every transaction begun", func() bool {
		for _, tx := range c.began {
			var st engine.StatusReply
			if err := c.call(api.MethodStatus, api.TxParams{TxID: tx}, &st); err != nil {
				return false
			}
			switch st.State {
			case engine.PhaseCommitted.String(), engine.PhaseAborted.String(), "forgotten":
			default:
				return false
			}
		}
		return true
	})
	eventually(c.t, "every transaction ended on every node", func() bool {
		for _, l := range c.logs() {
			rep := replayOf(c.t, l, replay.Options{})
			if rep.Nodes[0].InMemory != 0 || !rep.Consistent() {
				return false
			}
			if rep.Nodes[0].Data != nil && rep.Nodes[0].Data.Prepared != 0 {
				return false
			}
		}
		return true
	})
}

// eventually polls cond; the deadline only bounds a broken run.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// appendEvents writes hand-made events to a node's log as one row, as the
// node would.
func appendEvents(t *testing.T, pool *pgxpool.Pool, nodeName string, evs ...engine.Event) {
	t.Helper()
	entries := make([]logstore.Entry, len(evs))
	for i, ev := range evs {
		payload, err := engine.EncodeEvent(ev)
		if err != nil {
			t.Fatal(err)
		}
		entries[i] = logstore.Entry{Tx: uint64(ev.Tx()), Event: payload}
	}
	if _, err := logstore.New(pool).Append(context.Background(), nodeName, entries); err != nil {
		t.Fatal(err)
	}
}

// prepareByHand leaves a prepared transaction named gid on a data
// database, with a row in kv and, if marker, the outcome marker inside it
// (as a participant does). It is rolled back when the test ends, since a
// database with prepared transactions cannot be dropped.
func prepareByHand(t *testing.T, data *pgxpool.Pool, gid string, tx engine.TxID, key int, marker bool) {
	t.Helper()
	ctx := context.Background()
	conn, err := data.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	sql := fmt.Sprintf("BEGIN; INSERT INTO kv VALUES (%d, 'by hand');", key)
	if marker {
		sql += fmt.Sprintf(" INSERT INTO tpcd_markers (gid, tx) VALUES ('%s', %d);", gid, tx)
	}
	sql += fmt.Sprintf(" PREPARE TRANSACTION '%s'", gid)
	if _, err := conn.Exec(ctx, sql, pgx.QueryExecModeSimpleProtocol); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rollbackIfPrepared(t, data, gid) })
}

func rollbackIfPrepared(t *testing.T, data *pgxpool.Pool, gid string) {
	ctx := context.Background()
	var exists bool
	if err := data.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_prepared_xacts WHERE gid = $1)", gid).Scan(&exists); err != nil {
		t.Errorf("look for %s: %v", gid, err)
		return
	}
	if exists {
		if _, err := data.Exec(ctx, "ROLLBACK PREPARED '"+gid+"'", pgx.QueryExecModeSimpleProtocol); err != nil {
			t.Errorf("roll back %s: %v", gid, err)
		}
	}
}

var clusterRE = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)

// normalize hides the cluster id, which is random.
func normalize(s string) string { return clusterRE.ReplaceAllString(s, "<cluster>") }

// golden compares got with testdata/replay/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("..", "testdata", "replay", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if string(want) != got {
		t.Errorf("%s differs from the golden file (run with -update to accept):\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}
