package testcluster

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/internal/pgtest"
	"github.com/tpcd/tpcd/internal/testbin"
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
	// Logger receives the nodes' log lines. Default: Logger(t).
	Logger *slog.Logger
	// MaxConns bounds each participant's database pools. Default 20.
	MaxConns int
	// HoldPorts keeps every node's port the test's from start to end
	// (testbin.Port), so that no other program can take it while a node
	// is down; a stopped node's port then takes connections and answers
	// none. Without it, a stopped node's port refuses connections, as
	// after a process exits, and a start listens on it again.
	HoldPorts bool
}

// Cluster is a running cluster; it stops when the test ends.
type Cluster struct {
	T testing.TB
	// Coord is nil while the coordinator is stopped.
	Coord     *node.Coordinator
	CoordAddr string
	CoordDBs  *node.Databases
	// CoordOpts are what StartCoordinator starts the coordinator with; a
	// test may change them while it is stopped.
	CoordOpts node.CoordinatorOptions
	// Parts[i] is nil while participant i is stopped.
	Parts     []*node.Participant
	PartAddrs []string
	PartDBs   []*node.Databases
	// PartOpts are what StartParticipant starts each participant with.
	PartOpts []node.ParticipantOptions
	// Client calls the coordinator with Config.Client.
	Client *rpc.Client
	// Data are the participants' data databases, for tests that check
	// rows where they landed.
	Data []*pgxpool.Pool

	// ports (with Config.HoldPorts) and first are indexed by node: the
	// coordinator at 0, participant i at 1+i.
	ports []*testbin.Port
	first []net.Listener
}

// Logger logs to the test's log.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// Open opens a node's databases, closed when the test ends.
func Open(t testing.TB, spec node.DatabaseSpec) *node.Databases {
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
	if cfg.Logger == nil {
		cfg.Logger = Logger(t)
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = 20
	}
	c := &Cluster{T: t}
	addrs := c.listenAll(cfg.Participants+1, cfg.HoldPorts)
	c.CoordAddr, c.PartAddrs = addrs[0], addrs[1:]
	c.CoordDBs = Open(t, node.DatabaseSpec{LogURI: pgtest.NewDB(t), Logger: cfg.Logger})
	c.CoordOpts = node.CoordinatorOptions{Participants: c.PartAddrs, Log: c.CoordDBs.Log, Logger: cfg.Logger}
	if cfg.Coordinator != nil {
		cfg.Coordinator(&c.CoordOpts)
	}
	for i := range cfg.Participants {
		dbs := Open(t, node.DatabaseSpec{LogURI: pgtest.NewDB(t), DataURI: pgtest.NewDB(t), NeedData: true, Logger: cfg.Logger, MaxConns: cfg.MaxConns})
		c.PartDBs = append(c.PartDBs, dbs)
		c.Data = append(c.Data, dbs.Data)
		opts := node.ParticipantOptions{ID: engine.NodeID(i), Coordinator: c.CoordAddr, Log: dbs.Log, Data: dbs.Data, Logger: cfg.Logger}
		if cfg.Participant != nil {
			cfg.Participant(i, &opts)
		}
		c.PartOpts = append(c.PartOpts, opts)
	}
	c.Parts = make([]*node.Participant, cfg.Participants)
	t.Cleanup(c.Stop)
	for i := range c.Parts {
		c.StartParticipant(i)
	}
	c.StartCoordinator()
	c.Client = rpc.NewClient(c.CoordAddr, cfg.Client)
	t.Cleanup(func() { c.Client.Close() })
	if !cfg.NoTable {
		for i := range c.Parts {
			c.Exec1(i, "CREATE TABLE kv (k int PRIMARY KEY, v text)")
		}
	}
	return c
}

// listenAll takes n loopback ports the kernel picks and returns their
// addresses.
func (c *Cluster) listenAll(n int, hold bool) []string {
	c.T.Helper()
	if hold {
		c.ports = testbin.HoldPorts(c.T, n)
		return testbin.Addrs(c.ports)
	}
	addrs := make([]string, n)
	for k := range n {
		c.first = append(c.first, testbin.Listen(c.T))
		addrs[k] = c.first[k].Addr().String()
	}
	return addrs
}

// listener returns a listener on node k's address.
func (c *Cluster) listener(k int, addr string) net.Listener {
	c.T.Helper()
	if c.ports != nil {
		return c.ports[k].Lend()
	}
	if ln := c.first[k]; ln != nil {
		c.first[k] = nil
		return ln
	}
	// The port was given up when the node stopped; Go sets SO_REUSEADDR,
	// so it is free again at once unless the close is still settling.
	var err error
	for range 50 {
		var ln net.Listener
		if ln, err = net.Listen("tcp", addr); err == nil {
			return ln
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.T.Fatalf("listen again on %s: %v", addr, err)
	return nil
}

// StartCoordinator starts the stopped coordinator on its address and log
// with CoordOpts: a new epoch.
func (c *Cluster) StartCoordinator() {
	c.T.Helper()
	coord, err := node.StartCoordinator(context.Background(), c.listener(0, c.CoordAddr), c.CoordOpts)
	if err != nil {
		c.T.Fatalf("start coordinator: %v", err)
	}
	c.Coord = coord
}

// StopCoordinator closes the coordinator; its log stays.
func (c *Cluster) StopCoordinator() {
	if c.Coord != nil {
		c.Coord.Close()
		c.Coord = nil
	}
}

// RestartCoordinator stops the coordinator and starts it again, as an
// operator's restart would.
func (c *Cluster) RestartCoordinator() {
	c.T.Helper()
	c.StopCoordinator()
	c.StartCoordinator()
}

// StartParticipant starts stopped participant i on its address and
// databases with PartOpts[i].
func (c *Cluster) StartParticipant(i int) {
	c.T.Helper()
	p, err := node.StartParticipant(context.Background(), c.listener(1+i, c.PartAddrs[i]), c.PartOpts[i])
	if err != nil {
		c.T.Fatalf("start participant %d: %v", i, err)
	}
	c.Parts[i] = p
}

// StopParticipant closes participant i; its databases stay.
func (c *Cluster) StopParticipant(i int) {
	if c.Parts[i] != nil {
		c.Parts[i].Close()
		c.Parts[i] = nil
	}
}

// Stop closes every node that runs; the databases stay. The coordinator
// goes first: its loop keeps sending while its server drains, so a
// decision already on its way usually reaches the participants before they
// stop (a test that needs it applied waits for that: CommitApplied). Then
// the participants stop at once, since each takes a while.
func (c *Cluster) Stop() {
	c.StopCoordinator()
	var wg sync.WaitGroup
	for i := range c.Parts {
		wg.Go(func() { c.StopParticipant(i) })
	}
	wg.Wait()
}

// Call calls the coordinator with a generous deadline (it bounds a broken
// run, it measures nothing).
func (c *Cluster) Call(method string, params, result any) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return c.Client.Call(ctx, method, params, result)
}

// mustCall calls the coordinator, failing the test, with what the call was
// for, if the call fails.
func (c *Cluster) mustCall(what, method string, params, result any) {
	c.T.Helper()
	if err := c.Call(method, params, result); err != nil {
		c.T.Fatalf("%s: %v", what, err)
	}
}

// Begin starts a transaction or fails the test.
func (c *Cluster) Begin() engine.TxID {
	c.T.Helper()
	var r engine.BeginReply
	c.mustCall("begin", api.MethodBegin, struct{}{}, &r)
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
	c.mustCall(fmt.Sprintf("commit %d", tx), api.MethodCommit, api.TxParams{TxID: tx}, &r)
	return r
}

// MustCommit commits tx or fails the test unless it commits.
func (c *Cluster) MustCommit(tx engine.TxID) {
	c.T.Helper()
	if r := c.Commit(tx); r.Outcome != engine.OutcomeCommit {
		c.T.Fatalf("tx %d: %s (%s)", tx, r.Outcome, r.Reason)
	}
}

// CommitApplied commits tx, failing the test unless it commits, and
// waits until the commit is applied on every participant: the reply means
// decided, and the next statement should see it.
func (c *Cluster) CommitApplied(tx engine.TxID) {
	c.T.Helper()
	c.MustCommit(tx)
	Eventually(c.T, fmt.Sprintf("tx %d applied", tx), func() bool { return c.Status(tx).State == "committed" })
}

// Exec1 runs sql on node n in a transaction of its own and commits it,
// applied.
func (c *Cluster) Exec1(n int, sql string, args ...any) {
	c.T.Helper()
	tx := c.Begin()
	c.Exec(tx, n, sql, args...)
	c.CommitApplied(tx)
}

// Rollback rolls tx back or fails the test.
func (c *Cluster) Rollback(tx engine.TxID) {
	c.T.Helper()
	c.mustCall(fmt.Sprintf("rollback %d", tx), api.MethodRollback, api.TxParams{TxID: tx}, nil)
}

// Status returns where tx stands or fails the test.
func (c *Cluster) Status(tx engine.TxID) engine.StatusReply {
	c.T.Helper()
	var r engine.StatusReply
	c.mustCall(fmt.Sprintf("status %d", tx), api.MethodStatus, api.TxParams{TxID: tx}, &r)
	return r
}

// query collects a one-column query's rows on participant i's data
// database, past tpcd.
func query[T any](c *Cluster, i int, sql string) []T {
	c.T.Helper()
	rows, err := c.Data[i].Query(context.Background(), sql)
	if err != nil {
		c.T.Fatalf("participant %d: %s: %v", i, sql, err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[T])
	if err != nil {
		c.T.Fatalf("participant %d: %s: %v", i, sql, err)
	}
	return out
}

// Keys returns the keys in kv on participant i, in order.
func (c *Cluster) Keys(i int) []int {
	c.T.Helper()
	return query[int](c, i, "SELECT k FROM kv ORDER BY k")
}

// KV reads table kv on a participant's data database, past tpcd.
func KV(t testing.TB, data *pgxpool.Pool) map[int]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rows, err := data.Query(ctx, "SELECT k, v FROM kv")
	if err != nil {
		t.Fatalf("read kv: %v", err)
	}
	out := map[int]string{}
	var k int
	var v string
	if _, err := pgx.ForEachRow(rows, []any{&k, &v}, func() error { out[k] = v; return nil }); err != nil {
		t.Fatalf("read kv: %v", err)
	}
	return out
}

// Prepared returns the prepared transactions left on participant i.
func (c *Cluster) Prepared(i int) []string {
	c.T.Helper()
	return query[string](c, i, "SELECT gid FROM pg_prepared_xacts WHERE database = current_database()")
}

// Settled waits until nothing is left prepared on any participant.
func (c *Cluster) Settled() {
	c.T.Helper()
	for i := range c.Data {
		Eventually(c.T, fmt.Sprintf("no prepared transactions on participant %d", i), func() bool { return len(c.Prepared(i)) == 0 })
	}
}

// CommitOn runs sql with args on participants 0..n-1 in one transaction
// through the coordinator at addr and commits it; it fails unless the
// transaction committed and its commit is applied on every participant. It
// serves clusters a test reaches by address only: processes, or
// localcluster.
func CommitOn(ctx context.Context, addr string, n int, sql string, args ...any) error {
	cl := rpc.NewClient(addr, rpc.ClientOptions{})
	defer cl.Close()
	var b engine.BeginReply
	if err := cl.Call(ctx, api.MethodBegin, struct{}{}, &b); err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	for i := range n {
		id := engine.NodeID(i)
		if err := cl.Call(ctx, api.MethodExec, api.ExecParams{TxID: b.TxID, Node: &id, SQL: sql, Args: args}, nil); err != nil {
			cl.Call(ctx, api.MethodRollback, api.TxParams{TxID: b.TxID}, nil)
			return fmt.Errorf("exec on %d: %w", i, err)
		}
	}
	var r engine.OutcomeReply
	if err := cl.Call(ctx, api.MethodCommit, api.TxParams{TxID: b.TxID}, &r); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	if r.Outcome != engine.OutcomeCommit {
		return fmt.Errorf("%s: %s", r.Outcome, r.Reason)
	}
	// The answer comes once the decider committed; the prepared branches
	// commit right after. What a caller runs next (often on a table this
	// created) must find them committed.
	return api.WaitApplied(ctx, cl.Call, b.TxID)
}

// Eventually polls cond until it holds; the minute only bounds a broken run.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	EventuallyWithin(t, time.Minute, what, cond)
}

// EventuallyWithin polls cond until it holds, failing the test once within
// has passed.
func EventuallyWithin(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting after %v: %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WaitReady waits up to two minutes for the node at addr (a node run as
// a process, say) to answer a ping (api.MethodPing), failing the test if it
// never does.
func WaitReady(t testing.TB, addr string) {
	t.Helper()
	WaitServing(t, addr, 2*time.Minute, nil)
}

// WaitServing waits up to within for the node at addr to answer a ping
// (api.MethodPing), failing the test if it never does. gone, unless nil,
// is asked between tries whether the node's process ended, and with what
// to report; the test then fails at once.
func WaitServing(t testing.TB, addr string, within time.Duration, gone func() (string, bool)) {
	t.Helper()
	c := rpc.NewClient(addr, rpc.ClientOptions{})
	defer c.Close()
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		var r api.PingReply
		err := c.Call(ctx, api.MethodPing, struct{}{}, &r)
		cancel()
		if err == nil {
			return
		}
		if gone != nil {
			if why, ok := gone(); ok {
				t.Fatal(why)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never answered within %v: %v", addr, within, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
