package testcluster

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/internal/pgtest"
	"github.com/tpcd/tpcd/node"
	"github.com/tpcd/tpcd/rpc"
)

// Config describes the cluster.
type Config struct {
	// Participants is the number of participants. Default 2.
	Participants int
	// Coordinator and Participant, if set, adjust a node's options before
	// it starts.
	Coordinator func(*node.CoordinatorOptions)
	Participant func(i int, o *node.ParticipantOptions)
	// Client configures the cluster's client of the coordinator.
	Client rpc.ClientOptions
	// NoTable skips creating table kv (k int primary key, v text) on every
	// participant.
	NoTable bool
}

// Cluster is a running cluster; it stops when the test ends.
type Cluster struct {
	T         testing.TB
	Coord     *node.Coordinator
	CoordAddr string
	Parts     []*node.Participant
	PartAddrs []string
	// Client calls the coordinator with Config.Client.
	Client *rpc.Client
	// Data are the participants' data databases, for tests that check
	// rows where they landed.
	Data []*pgxpool.Pool
}

// Logger logs to the test's log.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(writer{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type writer struct{ t testing.TB }

func (w writer) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func open(t testing.TB, spec node.DatabaseSpec) *node.Databases {
	t.Helper()
	dbs, err := node.OpenDatabases(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dbs.Close() })
	return dbs
}

// Start brings the cluster up.
func Start(t testing.TB, cfg Config) *Cluster {
	t.Helper()
	if cfg.Participants == 0 {
		cfg.Participants = 2
	}
	logger := Logger(t)
	c := &Cluster{T: t}
	coordLn := listen(t)
	c.CoordAddr = coordLn.Addr().String()
	lns := make([]net.Listener, cfg.Participants)
	for i := range lns {
		lns[i] = listen(t)
		c.PartAddrs = append(c.PartAddrs, lns[i].Addr().String())
	}
	for i, ln := range lns {
		dbs := open(t, node.DatabaseSpec{LogURI: pgtest.NewDB(t), DataURI: pgtest.NewDB(t), NeedData: true, Logger: logger, MaxConns: 20})
		c.Data = append(c.Data, dbs.Data)
		opts := node.ParticipantOptions{ID: engine.NodeID(i), Coordinator: c.CoordAddr, Log: dbs.Log, Data: dbs.Data, Logger: logger}
		if cfg.Participant != nil {
			cfg.Participant(i, &opts)
		}
		p, err := node.StartParticipant(context.Background(), ln, opts)
		if err != nil {
			t.Fatal(err)
		}
		c.Parts = append(c.Parts, p)
		t.Cleanup(func() { p.Close() })
	}
	dbs := open(t, node.DatabaseSpec{LogURI: pgtest.NewDB(t), Logger: logger})
	opts := node.CoordinatorOptions{Participants: c.PartAddrs, Log: dbs.Log, Logger: logger}
	if cfg.Coordinator != nil {
		cfg.Coordinator(&opts)
	}
	coord, err := node.StartCoordinator(context.Background(), coordLn, opts)
	if err != nil {
		t.Fatal(err)
	}
	c.Coord = coord
	t.Cleanup(func() { coord.Close() })
	c.Client = rpc.NewClient(c.CoordAddr, cfg.Client)
	t.Cleanup(func() { c.Client.Close() })
	if !cfg.NoTable {
		for i := range c.Parts {
			tx := c.Begin()
			c.Exec(tx, i, "CREATE TABLE kv (k int PRIMARY KEY, v text)")
			if r := c.Commit(tx); r.Outcome != engine.OutcomeCommit {
				t.Fatalf("create table on node %d: %+v", i, r)
			}
		}
	}
	return c
}

// Call calls the coordinator with a generous deadline (it bounds a broken
// run, it measures nothing).
func (c *Cluster) Call(method string, params, result any) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return c.Client.Call(ctx, method, params, result)
}

// Begin starts a transaction or fails the test.
func (c *Cluster) Begin() engine.TxID {
	c.T.Helper()
	var r engine.BeginReply
	if err := c.Call(api.MethodBegin, struct{}{}, &r); err != nil {
		c.T.Fatalf("begin: %v", err)
	}
	return r.TxID
}

// TryExec runs a statement of tx on node n.
func (c *Cluster) TryExec(tx engine.TxID, n int, sql string, args ...any) (*engine.ExecReply, error) {
	id := engine.NodeID(n)
	var r engine.ExecReply
	if err := c.Call(api.MethodExec, api.ExecParams{TxID: tx, Node: &id, SQL: sql, Args: args}, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// Exec runs a statement or fails the test.
func (c *Cluster) Exec(tx engine.TxID, n int, sql string, args ...any) *engine.ExecReply {
	c.T.Helper()
	r, err := c.TryExec(tx, n, sql, args...)
	if err != nil {
		c.T.Fatalf("exec tx %d on node %d: %v", tx, n, err)
	}
	return r
}

// Commit commits tx or fails the test if the call fails.
func (c *Cluster) Commit(tx engine.TxID) engine.OutcomeReply {
	c.T.Helper()
	var r engine.OutcomeReply
	if err := c.Call(api.MethodCommit, api.TxParams{TxID: tx}, &r); err != nil {
		c.T.Fatalf("commit %d: %v", tx, err)
	}
	return r
}

// Rollback rolls tx back or fails the test.
func (c *Cluster) Rollback(tx engine.TxID) {
	c.T.Helper()
	if err := c.Call(api.MethodRollback, api.TxParams{TxID: tx}, nil); err != nil {
		c.T.Fatalf("rollback %d: %v", tx, err)
	}
}

// Status returns where tx stands or fails the test.
func (c *Cluster) Status(tx engine.TxID) engine.StatusReply {
	c.T.Helper()
	var r engine.StatusReply
	if err := c.Call(api.MethodStatus, api.TxParams{TxID: tx}, &r); err != nil {
		c.T.Fatalf("status %d: %v", tx, err)
	}
	return r
}

// Eventually polls cond until it holds; the minute only bounds a broken run.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WaitReady waits up to two minutes for the node at addr (a node run as
// a process, say) to answer a ping
// (api.MethodPing), failing the test if it never does.
func WaitReady(t testing.TB, addr string) {
	t.Helper()
	c := rpc.NewClient(addr, rpc.ClientOptions{})
	defer c.Close()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		var r api.PingReply
		err := c.Call(ctx, api.MethodPing, struct{}{}, &r)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never answered: %v", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
