package netns

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/db/embedpg"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/internal/pgtest"
	"github.com/tpcd/tpcd/internal/testbin"
	"github.com/tpcd/tpcd/internal/testcluster"
	"github.com/tpcd/tpcd/rpc"
)

// postgresHostEnv, set, makes the test binary a PostgreSQL host instead:
// "DIR,ADDRESS,NETWORK". The test starts it in a namespace of its own.
const postgresHostEnv = "TPCD_NETNS_POSTGRES"

func TestMain(m *testing.M) {
	if spec := os.Getenv(postgresHostEnv); spec != "" {
		os.Exit(servePostgres(spec))
	}
	os.Exit(testbin.Main(m, nil))
}

// pgPort is every server's port: each has an address of its own.
const pgPort = 5432

// servePostgres runs one embedded server on the private network until
// SIGTERM, then stops it.
func servePostgres(spec string) int {
	parts := strings.Split(spec, ",")
	if len(parts) != 3 {
		fmt.Fprintf(os.Stderr, "%s=%q: want DIR,ADDRESS,NETWORK\n", postgresHostEnv, spec)
		return 2
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
	c, err := embedpg.Start(context.Background(), embedpg.Options{
		Dir: parts[0], Port: pgPort, PrivateAddress: parts[1], PrivateNetwork: parts[2],
		// The test is about the network: the disk need not be durable.
		Settings: map[string]string{"fsync": "off", "synchronous_commit": "off"},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("postgres ready")
	<-stop
	if err := c.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// startPostgres starts a PostgreSQL server alone in h's namespace and
// returns the URI of its postgres database.
func startPostgres(t *testing.T, h *host, cidr string) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := testbin.ServerTempDir(t)
	spec := strings.Join([]string{dir + "/data", h.addr, cidr}, ",")
	p := testbin.StartCommand(t, h.command(exe), []string{postgresHostEnv + "=" + spec})
	// Stop it cleanly before the namespace goes: a killed host would leave
	// its postmaster running.
	t.Cleanup(func() { p.Stop(t) })
	testcluster.EventuallyWithin(t, 2*time.Minute, "postgres ready in "+h.name, func() bool {
		select {
		case <-p.Exited():
			t.Fatalf("postgres in %s exited:\n%s", h.name, p.Out)
		default:
		}
		return strings.Contains(p.Out.String(), "postgres ready")
	})
	return fmt.Sprintf("postgres://%s@%s/postgres?sslmode=disable", embedpg.Superuser, net.JoinHostPort(h.addr, strconv.Itoa(pgPort)))
}

const (
	participants = 3
	accounts     = 10
	opening      = 1000 // each account's balance at the start
	rpcPort      = "7000"
)

// setUpBank creates the accounts and the transfer ledger on a data server.
func setUpBank(t *testing.T, uri string) {
	t.Helper()
	conn := pgtest.Connect(t, uri)
	ctx := context.Background()
	for _, sql := range []string{
		"CREATE TABLE acct (id int PRIMARY KEY, balance bigint NOT NULL)",
		"CREATE TABLE xfer (id text PRIMARY KEY)",
		fmt.Sprintf("INSERT INTO acct SELECT g, %d FROM generate_series(0, %d) g", opening, accounts-1),
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
}

// transfer is one attempt and what its client was told.
type transfer struct {
	key      string
	from, to engine.NodeID
	told     string // "commit", "abort" or "" (no definite answer)
}

// bank runs transfers from several clients until stopped.
type bank struct {
	coordinator string
	mu          sync.Mutex
	done        []*transfer
	stop        chan struct{}
	wg          sync.WaitGroup
}

func (b *bank) start(clients int) {
	b.stop = make(chan struct{})
	for c := range clients {
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			cl := rpc.NewClient(b.coordinator, rpc.ClientOptions{})
			defer cl.Close()
			rng := rand.New(rand.NewPCG(uint64(c), 7))
			for n := 0; ; n++ {
				select {
				case <-b.stop:
					return
				default:
				}
				b.one(cl, rng, fmt.Sprintf("x-%d-%d", c, n))
			}
		}()
	}
}

// one moves a random amount between accounts of two participants, with the
// transfer's id in both ledgers, under its key.
func (b *bank) one(cl *rpc.Client, rng *rand.Rand, key string) {
	from := engine.NodeID(rng.IntN(participants))
	to := (from + 1 + engine.NodeID(rng.IntN(participants-1))) % participants
	amount := 1 + rng.IntN(50)
	stmt := func(n engine.NodeID, sql string, args ...any) api.StatementParams {
		return api.StatementParams{Node: &n, SQL: sql, Args: args}
	}
	params := api.TransactParams{Commit: true, Key: key, Statements: []api.StatementParams{
		stmt(from, "UPDATE acct SET balance = balance - $1 WHERE id = $2", amount, rng.IntN(accounts)),
		stmt(from, "INSERT INTO xfer VALUES ($1)", key),
		stmt(to, "UPDATE acct SET balance = balance + $1 WHERE id = $2", amount, rng.IntN(accounts)),
		stmt(to, "INSERT INTO xfer VALUES ($1)", key),
	}}
	tr := &transfer{key: key, from: from, to: to}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var reply api.TransactReply
	err := cl.Call(ctx, api.MethodTransact, params, &reply)
	switch {
	case err == nil && reply.Outcome != nil:
		tr.told = reply.Outcome.String()
	case rpc.IsCode(err, rpc.CodeAborted):
		tr.told = "abort"
	default:
		// Lost, timed out or refused: status tells later.
		time.Sleep(50 * time.Millisecond)
	}
	b.mu.Lock()
	b.done = append(b.done, tr)
	b.mu.Unlock()
}

func (b *bank) stopAndWait() []*transfer {
	close(b.stop)
	b.wg.Wait()
	return b.done
}

// TestBankAcrossPartitions runs bank transfers across three participants
// while links are cut: a participant from everyone mid-commit (the
// coordinator included, and it is the decider of some transfers in
// flight), a minority (a participant and its PostgreSQL server) from the
// majority, a participant from its own server, and the coordinator from
// its log.
func TestBankAcrossPartitions(t *testing.T) {
	nw := newNetwork(t)
	bin := testbin.Binary(t)
	token := "netns-" + nw.id

	coord := nw.add("coord", 10, "a")
	logHost := nw.add("pglog", 30, "a")
	var parts, dataHosts []*host
	for i := range participants {
		side := "a"
		if i == participants-1 {
			side = "b" // the minority: this participant and its server
		}
		parts = append(parts, nw.add("p"+strconv.Itoa(i), 20+i, side))
		dataHosts = append(dataHosts, nw.add("pg"+strconv.Itoa(i), 31+i, side))
	}

	// The servers, at once.
	uris := make([]string, participants+1)
	var wg sync.WaitGroup
	for i, h := range append(dataHosts, logHost) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			uris[i] = startPostgres(t, h, nw.cidr())
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	logURI := uris[participants]
	for _, uri := range uris[:participants] {
		setUpBank(t, uri)
	}

	addr := func(h *host) string { return net.JoinHostPort(h.addr, rpcPort) }
	coordArgs := []string{"coordinator", "--host", addr(coord), "--log-db", logURI, "--peer-token", token, "--timeout", "2"}
	for _, p := range parts {
		coordArgs = append(coordArgs, "--participant", addr(p))
	}
	nodes := []*testbin.Proc{testbin.StartCommand(t, coord.command(bin, coordArgs...), nil)}
	for i, p := range parts {
		nodes = append(nodes, testbin.StartCommand(t, p.command(bin, "participant", "--node-id", strconv.Itoa(i),
			"--host", addr(p), "--coordinator", addr(coord), "--data-db", uris[i], "--log-db", uris[i], "--peer-token", token), nil))
	}
	cl := rpc.NewClient(addr(coord), rpc.ClientOptions{})
	defer cl.Close()
	waitReady(t, cl, nodes)

	b := &bank{coordinator: addr(coord)}
	b.start(6)
	load := func(d time.Duration) { time.Sleep(d) }
	load(time.Second)
	for _, cut := range [][]string{
		{"p1"},    // a participant from everyone, mid-commit
		{"trunk"}, // the minority side from the majority
		{"pg0"},   // participant 0 from its data and log server
		{"pglog"}, // the coordinator from its log
		{"coord"}, // the coordinator from everyone
	} {
		nw.cut(cut...)
		// The cut is real: the test process, on the majority side, no
		// longer reaches what it cut off.
		for _, name := range cut {
			if name == "trunk" {
				name = "p" + strconv.Itoa(participants-1)
			}
			target := net.JoinHostPort(nw.hosts[name].addr, rpcPort)
			if strings.HasPrefix(name, "pg") {
				target = net.JoinHostPort(nw.hosts[name].addr, strconv.Itoa(pgPort))
			}
			if conn, err := net.DialTimeout("tcp", target, 300*time.Millisecond); err == nil {
				conn.Close()
				t.Fatalf("%s still reachable at %s with its link down", name, target)
			}
		}
		load(2500 * time.Millisecond)
		nw.heal(cut...)
		load(1500 * time.Millisecond)
	}
	transfers := b.stopAndWait()

	unanswered := 0
	for _, tr := range transfers {
		if tr.told == "" {
			unanswered++
		}
	}
	t.Logf("%d transfers, %d without a definite answer to their call", len(transfers), unanswered)
	resolve(t, cl, transfers)
	checkBank(t, uris[:participants], transfers)
}

// waitReady waits until the coordinator sees every participant and a
// transaction across all of them commits.
func waitReady(t *testing.T, cl *rpc.Client, nodes []*testbin.Proc) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	var last error
	for time.Now().Before(deadline) {
		for _, n := range nodes {
			select {
			case <-n.Exited():
				t.Fatalf("a node exited at start:\n%s", n.Out)
			default:
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		var reply api.TransactReply
		params := api.TransactParams{Commit: true}
		for i := range participants {
			n := engine.NodeID(i)
			params.Statements = append(params.Statements, api.StatementParams{Node: &n, SQL: "SELECT count(*) FROM acct"})
		}
		last = cl.Call(ctx, api.MethodTransact, params, &reply)
		cancel()
		if last == nil && reply.Outcome != nil && *reply.Outcome == engine.OutcomeCommit {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("cluster not ready within 2 minutes: %v", last)
}

// resolve asks the coordinator, by key, how each transfer whose client got
// no answer ended, until every one has a final state.
func resolve(t *testing.T, cl *rpc.Client, transfers []*transfer) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for _, tr := range transfers {
		for tr.told == "" {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			var st engine.StatusReply
			err := cl.Call(ctx, api.MethodStatus, api.StatusParams{Key: tr.key}, &st)
			cancel()
			switch {
			case err == nil && st.State == "committed":
				tr.told = "commit"
			case err == nil && (st.State == "aborted" || st.State == "unknown"):
				// unknown: the call never reached the coordinator, so
				// nothing of it may be anywhere.
				tr.told = "abort"
			case time.Now().After(deadline):
				t.Fatalf("transfer %s: no final state within 2 minutes (last %+v, %v)", tr.key, st, err)
			default:
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
}

// checkBank checks the data servers once nothing is prepared any more.
func checkBank(t *testing.T, uris []string, transfers []*transfer) {
	t.Helper()
	ctx := context.Background()
	conns := make([]*pgx.Conn, len(uris))
	for i, uri := range uris {
		conns[i] = pgtest.Connect(t, uri)
	}
	// Phase two finishes after the outcome is known: wait for it.
	for i, c := range conns {
		testcluster.EventuallyWithin(t, 3*time.Minute, fmt.Sprintf("participant %d holds no prepared transaction", i), func() bool {
			var n int
			if err := c.QueryRow(ctx, "SELECT count(*) FROM pg_prepared_xacts").Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n == 0
		})
	}
	var total int64
	ledgers := make([]map[string]bool, len(conns))
	for i, c := range conns {
		var sum int64
		if err := c.QueryRow(ctx, "SELECT sum(balance) FROM acct").Scan(&sum); err != nil {
			t.Fatal(err)
		}
		total += sum
		rows, err := c.Query(ctx, "SELECT id FROM xfer")
		if err != nil {
			t.Fatal(err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		ledgers[i] = map[string]bool{}
		for _, id := range ids {
			ledgers[i][id] = true
		}
	}
	if want := int64(participants * accounts * opening); total != want {
		t.Errorf("money not conserved: %d in all accounts, want %d", total, want)
	}
	var committed, aborted int
	var errs []error
	for _, tr := range transfers {
		onFrom, onTo := ledgers[tr.from][tr.key], ledgers[tr.to][tr.key]
		switch {
		case onFrom != onTo:
			errs = append(errs, fmt.Errorf("transfer %s is on one side only (participant %d: %v, participant %d: %v)", tr.key, tr.from, onFrom, tr.to, onTo))
		case tr.told == "commit" && !onFrom:
			errs = append(errs, fmt.Errorf("transfer %s was committed but is not in the ledgers", tr.key))
		case tr.told == "abort" && onFrom:
			errs = append(errs, fmt.Errorf("transfer %s aborted but is in the ledgers", tr.key))
		}
		if tr.told == "commit" {
			committed++
		} else {
			aborted++
		}
	}
	if err := errors.Join(errs...); err != nil {
		t.Error(err)
	}
	if committed == 0 {
		t.Errorf("no transfer committed out of %d", len(transfers))
	}
	t.Logf("%d transfers: %d committed, %d aborted", len(transfers), committed, aborted)
}
