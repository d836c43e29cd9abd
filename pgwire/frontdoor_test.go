package pgwire_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/internal/pgtest"
	"github.com/tpcd/tpcd/internal/testcluster"
	"github.com/tpcd/tpcd/pgwire"
	"github.com/tpcd/tpcd/shard"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// The front door's users in these tests.
const (
	testUser     = "alice"
	testPassword = "s3cret, with a comma"
)

// frontDoor is a coordinator and two participants (testcluster, table kv
// (k int primary key, v text) on each), and the PostgreSQL front door on
// a loopback port, with kv sharded by k.
type frontDoor struct {
	t    *testing.T
	c    *testcluster.Cluster
	addr string
}

func startFrontDoor(t *testing.T, mod func(*pgwire.Options)) *frontDoor {
	t.Helper()
	c := testcluster.Start(t, testcluster.Config{Participants: 2})
	opts := pgwire.Options{Coordinator: c.Coord, Users: map[string]string{testUser: testPassword},
		Shards: map[string]string{"kv": "k"}, Logger: testcluster.Logger(t)}
	if mod != nil {
		mod(&opts)
	}
	srv, err := pgwire.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	// Registered after the cluster's, so it runs first: sessions roll
	// back while the coordinator still runs.
	t.Cleanup(func() { srv.Close() })
	return &frontDoor{t: t, c: c, addr: ln.Addr().String()}
}

// url is a connection URL for user and password (sslmode disable unless
// extra says otherwise).
func (f *frontDoor) url(user, password, extra string) string {
	host, port, _ := net.SplitHostPort(f.addr)
	if extra == "" {
		extra = "sslmode=disable"
	}
	return fmt.Sprintf("postgres://%s:%s@%s:%s/tpcd?%s", user, urlEscape(password), host, port, extra)
}

func urlEscape(s string) string {
	out := ""
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			out += string(r)
		default:
			out += fmt.Sprintf("%%%02X", r)
		}
	}
	return out
}

func (f *frontDoor) connect(ctx context.Context) *pgx.Conn {
	f.t.Helper()
	conn, err := pgx.Connect(ctx, f.url(testUser, testPassword, ""))
	if err != nil {
		f.t.Fatalf("connect: %v", err)
	}
	f.t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// connectMode connects with pgx in one of its query modes; the caller
// closes the connection.
func (f *frontDoor) connectMode(ctx context.Context, mode pgx.QueryExecMode) *pgx.Conn {
	f.t.Helper()
	cfg, err := pgx.ParseConfig(f.url(testUser, testPassword, ""))
	if err != nil {
		f.t.Fatal(err)
	}
	cfg.DefaultQueryExecMode = mode
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		f.t.Fatalf("%v: connect: %v", mode, err)
	}
	return conn
}

// keysOn returns n keys that the shard hash puts on participant node (of
// two), from start on.
func keysOn(node, n, start int) []int {
	var keys []int
	for k := start; len(keys) < n; k++ {
		if shard.NodeFor(strconv.Itoa(k), 2) == engine.NodeID(node) {
			keys = append(keys, k)
		}
	}
	return keys
}

// openOn counts the data server's sessions of the participant that are in
// a transaction.
func (f *frontDoor) openOn(node int) int {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var n int
	err := f.c.Data[node].QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%'`).Scan(&n)
	if err != nil {
		f.t.Fatal(err)
	}
	return n
}

// wantRows checks that kv holds exactly want, each row on the participant
// its key hashes to.
func (f *frontDoor) wantRows(want map[int]string) {
	f.t.Helper()
	// Committed means decided; the second participant may apply it a
	// moment later (phase two: its branch is prepared until then).
	testcluster.Eventually(f.t, "rows applied on both participants", func() bool {
		got := 0
		for n := range 2 {
			got += len(testcluster.KV(f.t, f.c.Data[n]))
		}
		return got >= len(want) && len(f.c.Prepared(0)) == 0 && len(f.c.Prepared(1)) == 0
	})
	for n := range 2 {
		got := testcluster.KV(f.t, f.c.Data[n])
		for k, v := range want {
			onThis := shard.NodeFor(strconv.Itoa(k), 2) == engine.NodeID(n)
			if gv, ok := got[k]; ok != onThis || ok && gv != v {
				f.t.Fatalf("participant %d holds %v; want key %d=%q there: %v", n, got, k, v, onThis)
			}
		}
		for k := range got {
			if _, ok := want[k]; !ok {
				f.t.Fatalf("participant %d holds unexpected key %d (%v)", n, k, got)
			}
		}
	}
}

// nothingLeft waits until no transaction is open or prepared on either
// participant's data server.
func (f *frontDoor) nothingLeft() {
	f.t.Helper()
	// An aborted transaction's other branches are rolled back in phase
	// two, after the client has its answer: wait for them, and name what
	// is left when the wait gives up.
	left := func() string {
		for n := range 2 {
			if open := f.openOn(n); open > 0 {
				return fmt.Sprintf("participant %d has %d open transactions", n, open)
			}
			if gids := f.c.Prepared(n); len(gids) > 0 {
				return fmt.Sprintf("participant %d left prepared: %v", n, gids)
			}
		}
		return ""
	}
	var last string
	testcluster.Eventually(f.t, "no open or prepared transaction on the participants", func() bool {
		now := left()
		if now != "" && now != last {
			f.t.Logf("waiting: %s", now)
		}
		last = now
		return now == ""
	})
}
