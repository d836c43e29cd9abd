package security

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/db/embedpg"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/internal/testbin"
	"github.com/tpcd/tpcd/rpc"
)

// fromAddr is an HTTP/1.1 client whose connections leave from the loopback
// address from, so that one test can be several clients (a client is its
// remote IP).
func fromAddr(from string) *http.Client {
	d := &net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext, Protocols: protocols}}
}

// rpcReply is one JSON-RPC response.
type rpcReply struct {
	ID     json.RawMessage `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  *rpc.Error      `json:"error"`
}

// steadyClient commits one transaction after another, a row on each
// participant, until stopped; every failure is kept.
type steadyClient struct {
	commits atomic.Int64
	mu      sync.Mutex
	errs    []error
}

func (s *steadyClient) run(ctx context.Context, c *rpc.Client, nodes int) {
	for k := 1; ctx.Err() == nil; k++ {
		err := func() error {
			var b engine.BeginReply
			if err := c.Call(ctx, api.MethodBegin, nil, &b); err != nil {
				return fmt.Errorf("begin: %w", err)
			}
			for i := range nodes {
				n := engine.NodeID(i)
				if err := c.Call(ctx, api.MethodExec, api.ExecParams{TxID: b.TxID, Node: &n, SQL: "INSERT INTO kv VALUES ($1, 'steady')", Args: []any{k}}, nil); err != nil {
					return fmt.Errorf("exec on %d in transaction %d: %w", i, b.TxID, err)
				}
			}
			var out engine.OutcomeReply
			if err := c.Call(ctx, api.MethodCommit, api.TxParams{TxID: b.TxID}, &out); err != nil {
				return fmt.Errorf("commit %d: %w", b.TxID, err)
			}
			if out.Outcome != engine.OutcomeCommit {
				return fmt.Errorf("transaction %d: %s (%s)", b.TxID, out.Outcome, out.Reason)
			}
			return nil
		}()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			s.mu.Lock()
			s.errs = append(s.errs, err)
			s.mu.Unlock()
			continue
		}
		s.commits.Add(1)
	}
}

// waitCommits waits until the steady client has committed n transactions
// in all; the deadline is a guard against a hang, not a measurement.
func (s *steadyClient) waitCommits(t *testing.T, n int64, what string) {
	t.Helper()
	for deadline := time.Now().Add(3 * time.Minute); s.commits.Load() < n; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			s.mu.Lock()
			defer s.mu.Unlock()
			t.Fatalf("%s: the steady client committed %d transactions, never %d; its errors: %v", what, s.commits.Load(), n, s.errs)
		}
	}
}

// goroutines reads the go_goroutines gauge of a node's metrics.
func goroutines(t *testing.T, metricsAddr string) float64 {
	t.Helper()
	_, text, err := observer{hc: http.DefaultClient, base: "http://" + metricsAddr}.get("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	return metricValue(t, text, "go_goroutines")
}

// TestFairShareAgainstDefaults reproduces, as outsiders on real sockets
// against nodes run with default settings, two ways one client used to
// starve the others:
//
//   - one batch of 1,000 exec calls, each beginning a transaction, from
//     one address: it took all 100 data connections of every participant
//     and the workload of another client fell to 5 commits in 40 s. Now
//     the batch gets its share of the coordinator's open transactions
//     (half of --max-open with two active clients) and CodeLimit for the
//     rest, the participants' transactions stay within --max-open, and
//     the other client keeps committing without a single failure;
//   - 3,000 idle batch streams from one address (5,000 once took a
//     coordinator to 496 MiB and halved its commits): the coordinator
//     keeps at most its per-address cap of them, its goroutines stay
//     within that, and the other client keeps committing.
func TestFairShareAgainstDefaults(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	// A server of the test's own: the shared one allows 200 connections,
	// less than two participants' pools.
	pg, err := embedpg.Start(ctx, embedpg.Options{MaxConnections: 400, MaxPreparedTransactions: 400,
		Settings: map[string]string{"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}})
	if err != nil {
		t.Fatal(err)
	}
	// Stopped after the nodes, whose cleanups were registered later.
	t.Cleanup(func() { pg.Stop() })
	uri := func(name string) string {
		if err := pg.CreateDatabase(ctx, name); err != nil {
			t.Fatal(err)
		}
		return pg.URI(name)
	}
	const participants = 2
	// Each node's RPC and metrics ports, held by the test and passed on.
	coordPorts := testbin.HoldPorts(t, 2)
	coord, coordMetrics := coordPorts[0].Addr, coordPorts[1].Addr
	var parts, partMetrics, dataDBs []string
	for i := range participants {
		ports := testbin.HoldPorts(t, 2)
		parts, partMetrics = append(parts, ports[0].Addr), append(partMetrics, ports[1].Addr)
		dataDBs = append(dataDBs, fmt.Sprintf("data%d", i))
		testbin.StartServing(t, testbin.Binary(t), nil, ports, "participant", "--node-id", strconv.Itoa(i), "--host", parts[i], "--coordinator", coord,
			"--log-db", uri(fmt.Sprintf("log%d", i)), "--data-db", uri(dataDBs[i]), "--metrics-addr", partMetrics[i])
	}
	args := []string{"coordinator", "--host", coord, "--log-db", uri("coordlog"), "--metrics-addr", coordMetrics}
	for _, p := range parts {
		args = append(args, "--participant", p)
	}
	testbin.StartServing(t, testbin.Binary(t), nil, coordPorts, args...)
	observer{hc: http.DefaultClient, base: "http://" + coordMetrics}.waitReady(t)
	for _, m := range partMetrics {
		observer{hc: http.DefaultClient, base: "http://" + m}.waitReady(t)
	}

	steadyRPC := rpc.NewClient(coord, rpc.ClientOptions{}) // from 127.0.0.1
	defer steadyRPC.Close()
	var b engine.BeginReply
	if err := steadyRPC.Call(ctx, api.MethodBegin, nil, &b); err != nil {
		t.Fatal(err)
	}
	for i := range participants {
		n := engine.NodeID(i)
		if err := steadyRPC.Call(ctx, api.MethodExec, api.ExecParams{TxID: b.TxID, Node: &n, SQL: "CREATE TABLE kv (k int PRIMARY KEY, v text)"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := steadyRPC.Call(ctx, api.MethodCommit, api.TxParams{TxID: b.TxID}, nil); err != nil {
		t.Fatal(err)
	}
	// Commit answers once decided; the steady client's first exec may reach
	// a participant whose CREATE TABLE is still prepared.
	if err := api.WaitApplied(ctx, steadyRPC.Call, b.TxID); err != nil {
		t.Fatal(err)
	}
	steady := &steadyClient{}
	steadyCtx, stopSteady := context.WithCancel(ctx)
	var steadyDone sync.WaitGroup
	steadyDone.Add(1)
	go func() { defer steadyDone.Done(); steady.run(steadyCtx, steadyRPC, participants) }()
	defer func() { stopSteady(); steadyDone.Wait() }()
	steady.waitCommits(t, 5, "before the hog")

	// The hog: one batch of 1,000 execs without a transaction (each
	// begins one), from another address.
	const calls = 1000
	var batch bytes.Buffer
	batch.WriteByte('[')
	for i := range calls {
		if i > 0 {
			batch.WriteByte(',')
		}
		fmt.Fprintf(&batch, `{"jsonrpc":"2.0","id":%d,"method":"exec","params":{"node":%d,"sql":"SELECT %d"}}`, i, i%participants, i)
	}
	batch.WriteByte(']')
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+coord+"/rpc", &batch)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := fromAddr("127.0.0.2").Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	var answers []rpcReply
	if err := json.Unmarshal(raw, &answers); err != nil || len(answers) != calls {
		t.Fatalf("the hog's batch answer (%d answers, %v): %.500s", len(answers), err, raw)
	}
	admitted, limited := 0, 0
	for _, a := range answers {
		switch {
		case a.Error == nil:
			admitted++
		case a.Error.Code == rpc.CodeLimit:
			limited++
		default:
			t.Errorf("hog's exec %s: %+v, want a result or code %d", a.ID, a.Error, rpc.CodeLimit)
		}
	}
	const share = 80 / 2 // --max-open's default, between two active clients
	t.Logf("the hog's batch: %d admitted, %d refused with code %d", admitted, limited, rpc.CodeLimit)
	if admitted < 1 || admitted > share || limited != calls-admitted {
		t.Fatalf("the hog got %d transactions and %d limit errors; want at most its share (%d) and the limit error for the rest", admitted, limited, share)
	}

	// The hog's transactions are open (the idle timeout ends them after a
	// minute): the participants' data databases hold them, and no more
	// than the coordinator admits.
	for i, name := range dataDBs {
		conn, err := pgx.Connect(ctx, pg.URI(name))
		if err != nil {
			t.Fatal(err)
		}
		var backends, inTx int
		err = conn.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE state LIKE 'idle in transaction%' OR xact_start IS NOT NULL AND state = 'active')
			FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, name).Scan(&backends, &inTx)
		conn.Close(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("participant %d: %d connections to its data database, %d in a transaction", i, backends, inTx)
		if backends > 100 || inTx > 80 {
			t.Fatalf("participant %d: %d connections, %d in a transaction; want at most its pool (100) and --max-open (80)", i, backends, inTx)
		}
	}
	after := steady.commits.Load()
	steady.waitCommits(t, after+20, "after the hog")

	// A third client still gets in.
	var tb engine.BeginReply
	if err := callFrom(ctx, "127.0.0.3", coord, api.MethodBegin, &tb); err != nil {
		t.Fatalf("a third client's begin while the hog holds its share: %v", err)
	}

	// The stream flood: 3,000 idle batch streams from a fourth address.
	before := goroutines(t, coordMetrics)
	var streams []net.Conn
	defer func() {
		for _, c := range streams {
			c.Close()
		}
	}()
	accepted := 0
	for range 3000 {
		conn, ok := openStream(t, "127.0.0.4", coord)
		streams = append(streams, conn)
		if ok {
			accepted++
		}
	}
	// The coordinator closes the stream it evicts for a newer one after
	// admitting that one, so the last few evictions may still be on their
	// way: count again, the streams still open only, for up to five
	// seconds until the count is within the cap.
	var alive int
	open := streams
	for try := 0; try < 50; try++ {
		var still []net.Conn
		for _, c := range open {
			if streamAlive(c) {
				still = append(still, c)
			}
		}
		open, alive = still, len(still)
		if alive <= rpc.DefaultMaxConnsPerHost {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	during := goroutines(t, coordMetrics)
	t.Logf("stream flood: %d of %d upgrades accepted, %d still open; coordinator goroutines %v before, %v after", accepted, len(streams), alive, before, during)
	if alive > rpc.DefaultMaxConnsPerHost || during > before+rpc.DefaultMaxConnsPerHost+64 {
		t.Fatalf("%d streams open and %v goroutines (%v before); want at most %d more", alive, during, before, rpc.DefaultMaxConnsPerHost)
	}
	after = steady.commits.Load()
	steady.waitCommits(t, after+20, "during the stream flood")

	stopSteady()
	steadyDone.Wait()
	steady.mu.Lock()
	defer steady.mu.Unlock()
	if len(steady.errs) > 0 {
		t.Fatalf("the steady client failed %d times, first: %v", len(steady.errs), steady.errs[0])
	}
}

// callFrom makes one call from the loopback address from and decodes its
// result into out.
func callFrom(ctx context.Context, from, addr, method string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/rpc",
		strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"`+method+`"}`))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := fromAddr(from).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var a rpcReply
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		return err
	}
	if a.Error != nil {
		return a.Error
	}
	return json.Unmarshal(a.Result, out)
}

// openStream upgrades a connection from the address from to a batch
// stream and leaves it idle; ok reports a 101 answer.
func openStream(t *testing.T, from, addr string) (net.Conn, bool) {
	t.Helper()
	d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", from, err)
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	defer conn.SetDeadline(time.Time{})
	io.WriteString(conn, "GET /rpc HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: "+rpc.StreamProtocol+"\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	return conn, err == nil && resp.StatusCode == http.StatusSwitchingProtocols
}

// streamAlive reports whether the server still holds an idle stream open:
// a read finds nothing to read rather than the end of the stream.
func streamAlive(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(time.Millisecond))
	defer c.SetReadDeadline(time.Time{})
	var b [1]byte
	_, err := c.Read(b[:])
	var ne net.Error
	return err != nil && errors.As(err, &ne) && ne.Timeout()
}
