package node_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/db"
	"github.com/tpcd/tpcd/internal/pgtest"
	"github.com/tpcd/tpcd/internal/testcluster"
	"github.com/tpcd/tpcd/logstore"
	"github.com/tpcd/tpcd/node"
)

var logLockRoles atomic.Int64

// TestLogLockWatch: a holder whose session breaks takes the lock again;
// one that finds another took it meanwhile loses it. The holder logs in as
// a role of its own, which the test stops from logging in while the
// second takes the lock, so that the order is certain.
func TestLogLockWatch(t *testing.T) {
	uri := pgtest.NewDB(t)
	admin := pgtest.Connect(t, uri)
	role := fmt.Sprintf("tpcd_lock_holder_%d_%d", time.Now().UnixNano()%1e9, logLockRoles.Add(1))
	exec := func(sql string) {
		t.Helper()
		if _, err := admin.Exec(t.Context(), sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	exec("CREATE ROLE " + role + " LOGIN SUPERUSER")
	t.Cleanup(func() { admin.Exec(context.Background(), "DROP ROLE IF EXISTS "+role) })
	u, err := url.Parse(uri)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(role)
	holderURI := u.String()

	held, err := node.LockLog(t.Context(), holderURI, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if _, err := node.LockLog(t.Context(), uri, 500*time.Millisecond, nil); err == nil || !strings.Contains(err.Error(), "another coordinator serves on this log database") {
		t.Fatalf("a second lock on the log: %v, want a refusal", err)
	}
	terminate := func() {
		t.Helper()
		var n int
		if err := admin.QueryRow(t.Context(), "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = $1", role).Scan(&n); err != nil || n != 1 {
			t.Fatalf("terminate the holder's session: %d, %v", n, err)
		}
	}
	holderPID := func() (pid int32, ok bool) {
		err := admin.QueryRow(t.Context(), "SELECT pid FROM pg_stat_activity WHERE usename = $1", role).Scan(&pid)
		return pid, err == nil
	}

	// The session breaks; nobody else wants the lock: taken again.
	before, _ := holderPID()
	terminate()
	testcluster.EventuallyWithin(t, 30*time.Second, "the lock taken again on a new session", func() bool {
		pid, ok := holderPID()
		if !ok || pid == before {
			return false
		}
		holder, locked, err := node.LogLockHolder(t.Context(), admin)
		return err == nil && locked && strings.Contains(holder, fmt.Sprint(pid))
	})
	if err := held.Err(); err != nil {
		t.Fatalf("lost after a broken session nobody else used: %v", err)
	}

	// The session breaks, and the holder cannot log in until another has
	// the lock: lost.
	exec("ALTER ROLE " + role + " NOLOGIN")
	terminate()
	other, err := node.LockLog(t.Context(), uri, 10*time.Second, nil)
	if err != nil {
		t.Fatalf("the lock after its holder's session ended: %v", err)
	}
	defer other.Close()
	exec("ALTER ROLE " + role + " LOGIN")
	select {
	case <-held.Lost():
	case <-time.After(30 * time.Second):
		t.Fatal("the first holder did not learn that another took its lock")
	}
	if err := held.Err(); err == nil || !strings.Contains(err.Error(), "another coordinator took the lock meanwhile") {
		t.Fatalf("why the lock was lost: %v", err)
	}
	if err := other.Err(); err != nil {
		t.Fatalf("the new holder: %v", err)
	}
	if _, locked, err := node.LogLockHolder(t.Context(), admin); err != nil || !locked {
		t.Fatalf("nobody holds the lock at the end: %v %v", locked, err)
	}
}

// TestLogLockOutlivesACut: a holder cut from its log for a moment, whose
// old session the server still keeps (with the lock), ends that session
// and takes the lock again instead of taking it for another coordinator's.
func TestLogLockOutlivesACut(t *testing.T) {
	uri := pgtest.NewDB(t)
	admin := pgtest.Connect(t, uri)
	u, err := url.Parse(uri)
	if err != nil {
		t.Fatal(err)
	}
	link := newBlackhole(t, u.Host)
	u.Host = link.addr()
	held, err := node.LockLog(t.Context(), u.String(), time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	// The lock's holder; 0 for none (between the old session's end and
	// the new one's take).
	holderPID := func() int32 {
		t.Helper()
		var pid int32
		err := admin.QueryRow(t.Context(), `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = 1953523556 AND objid = 1
			AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&pid)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			t.Fatalf("who holds the lock: %v", err)
		}
		return pid
	}
	before := holderPID()
	if before == 0 {
		t.Fatal("nobody holds the lock")
	}
	// The connection it has goes dark for good, as after a cut the
	// server has not noticed; new connections get through.
	link.cut()
	testcluster.EventuallyWithin(t, 30*time.Second, "the lock held by a new session of the same holder", func() bool {
		pid := holderPID()
		return held.Err() == nil && pid != 0 && pid != before
	})
	if err := held.Err(); err != nil {
		t.Fatalf("the holder took its own old session for another coordinator: %v", err)
	}
}

// blackhole forwards TCP connections to a server. cut makes the
// connections open now forward nothing more, closing none, as a link that
// went down and came back does to connections whose packets were lost;
// connections opened later are forwarded.
type blackhole struct {
	ln     net.Listener
	target string
	gen    atomic.Int64
}

func newBlackhole(t *testing.T, target string) *blackhole {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &blackhole{ln: ln, target: target}
	var conns []net.Conn
	var mu sync.Mutex
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, s)
			mu.Unlock()
			gen := b.gen.Load()
			go b.forward(c, s, gen)
			go b.forward(s, c, gen)
		}
	}()
	return b
}

func (b *blackhole) addr() string { return b.ln.Addr().String() }

func (b *blackhole) cut() { b.gen.Add(1) }

// forward copies from to to while the connection's generation is the
// current one, and afterwards reads and drops.
func (b *blackhole) forward(from, to net.Conn, gen int64) {
	buf := make([]byte, 32<<10)
	for {
		n, err := from.Read(buf)
		if n > 0 && b.gen.Load() == gen {
			if _, werr := to.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// TestLogLockWatchesTheSlot: a holder that claimed the log's slot stops
// once another took the slot over (which fenced its appends out), and a
// claim refuses a slot held by a lease.
func TestLogLockWatchesTheSlot(t *testing.T) {
	pool := pgtest.MigratedPool(t, db.MigrateLog)
	held, err := node.LockLog(t.Context(), pool.Config().ConnString(), time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	gen, err := node.ClaimSlot(t.Context(), pool, "c1:9990")
	if err != nil {
		t.Fatal(err)
	}
	held.WatchSlot(gen)
	time.Sleep(3 * time.Second) // a check or two, with the slot its own
	if err := held.Err(); err != nil {
		t.Fatalf("lost with the slot still its own: %v", err)
	}
	// The claim was for no time: a take (as by a standby that missed the
	// lock while its session was broken) succeeds, and fences the holder.
	store := logstore.New(pool)
	if _, taken, _, err := store.TakeLease(t.Context(), api.CoordinatorName, "standby:9990", time.Hour); err != nil || !taken {
		t.Fatalf("take the claimed slot: %v %v", taken, err)
	}
	select {
	case <-held.Lost():
	case <-time.After(30 * time.Second):
		t.Fatal("the holder did not stop after its slot was taken over")
	}
	if err := held.Err(); err == nil || !strings.Contains(err.Error(), "standby:9990") {
		t.Fatalf("why it stopped: %v, want the slot's new holder named", err)
	}
	if _, err := node.ClaimSlot(t.Context(), pool, "c2:9990"); err == nil || !strings.Contains(err.Error(), "standby:9990") {
		t.Fatalf("a claim of a slot held by a lease: %v, want a refusal naming the holder", err)
	}
}
