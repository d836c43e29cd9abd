package embedpg

import (
	"context"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// supervised runs Supervise in the background and reports its calls.
type supervised struct {
	down   chan error
	up     chan struct{}
	result chan error
}

func supervise(t *testing.T, c *Cluster, sup Supervision) *supervised {
	t.Helper()
	s := &supervised{down: make(chan error, 10), up: make(chan struct{}, 10), result: make(chan error, 1)}
	down := sup.Down
	sup.Down = func(err error) {
		if down != nil {
			down(err)
		}
		s.down <- err
	}
	sup.Up = func() { s.up <- struct{}{} }
	ctx, cancel := context.WithCancel(context.Background())
	go func() { s.result <- c.Supervise(ctx, sup) }()
	t.Cleanup(cancel)
	return s
}

// healWithin is how long a supervised server may take to come back.
const healWithin = 30 * time.Second

// killAndHeal SIGKILLs the postmaster and waits for the supervisor to
// report it down, then up again.
func (s *supervised) killAndHeal(t *testing.T, c *Cluster) time.Duration {
	t.Helper()
	began := time.Now()
	pid := c.PID()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-s.down:
		if !strings.Contains(err.Error(), strconv.Itoa(pid)) {
			t.Errorf("down report does not name pid %d: %v", pid, err)
		}
	case err := <-s.result:
		t.Fatalf("Supervise returned %v instead of restarting", err)
	case <-time.After(healWithin):
		t.Fatal("no down report")
	}
	select {
	case <-s.up:
	case err := <-s.result:
		t.Fatalf("Supervise returned %v instead of restarting", err)
	case <-time.After(healWithin):
		t.Fatalf("not restarted within %v", healWithin)
	}
	if c.PID() == 0 || c.PID() == pid {
		t.Fatalf("PID after the restart: %d (killed %d)", c.PID(), pid)
	}
	return time.Since(began)
}

func TestSuperviseRestartsAKilledServer(t *testing.T) {
	t.Parallel()
	c := start(t, Options{})
	port := c.Port()
	conn := connect(t, c.URI("postgres"))
	mustExec(t, conn, "CREATE TABLE t (x int)")
	mustExec(t, conn, "BEGIN")
	mustExec(t, conn, "INSERT INTO t VALUES (1)")
	mustExec(t, conn, "PREPARE TRANSACTION 'in-doubt'")
	s := supervise(t, c, Supervision{})

	took := s.killAndHeal(t, c)
	t.Logf("healed in %v", took)
	if c.Port() != port {
		t.Fatalf("port changed across the restart: %d -> %d", port, c.Port())
	}
	conn = connect(t, c.URI("postgres"))
	mustExec(t, conn, "COMMIT PREPARED 'in-doubt'") // crash recovery kept it
	if n := queryOne[int](t, conn, "SELECT sum(x) FROM t"); n != 1 {
		t.Fatalf("sum = %d, want 1", n)
	}

	// A stop asked for is no death.
	if err := c.Shutdown(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-s.result:
		if err != nil {
			t.Fatalf("Supervise after Shutdown: %v", err)
		}
	case <-time.After(healWithin):
		t.Fatal("Supervise did not return after Shutdown")
	}
	if c.PID() != 0 {
		t.Fatal("restarted after Shutdown")
	}
}

func TestSuperviseGivesUpOnAServerThatKeepsDying(t *testing.T) {
	t.Parallel()
	c := start(t, Options{})
	s := supervise(t, c, Supervision{MaxRestarts: 2, Window: time.Hour})
	for range 2 {
		s.killAndHeal(t, c)
	}
	if err := syscall.Kill(c.PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-s.result:
		if err == nil || !strings.Contains(err.Error(), "died or failed to restart 3 times within 1h0m0s") || !strings.Contains(err.Error(), c.LogFile()) {
			t.Fatalf("Supervise: %v; want it to give up, counting the deaths and naming the log", err)
		}
	case <-s.up:
		t.Fatal("restarted a third time")
	case <-time.After(healWithin):
		t.Fatal("Supervise did not give up")
	}
	if c.PID() != 0 {
		t.Fatal("a server runs after Supervise gave up")
	}
}

// takePortOnDeath returns a Down for Supervise that takes the server's port
// at its first death, so that restarts, which must keep the port its
// clients know, cannot bind it; release gives it back.
func takePortOnDeath(t *testing.T, c *Cluster) (down func(error), release func()) {
	var mu sync.Mutex
	var taken net.Listener
	release = func() {
		mu.Lock()
		defer mu.Unlock()
		if taken != nil {
			taken.Close()
		}
	}
	t.Cleanup(release)
	down = func(error) {
		mu.Lock()
		defer mu.Unlock()
		if taken != nil {
			return
		}
		// The port, free since the death, is an ephemeral one: another
		// test's outgoing connection may hold it for a moment. Supervise
		// waits for Down before it restarts, so the test waits too.
		var ln net.Listener
		var err error
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			ln, err = net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port)))
			if err == nil || time.Now().After(deadline) {
				break
			}
		}
		if err != nil {
			t.Errorf("take the port: %v", err)
			return
		}
		taken = ln
	}
	return down, release
}

func TestSuperviseRetriesAFailedRestart(t *testing.T) {
	t.Parallel()
	c := start(t, Options{})
	down, release := takePortOnDeath(t, c)
	s := supervise(t, c, Supervision{Down: down})
	if err := syscall.Kill(c.PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-s.down
	time.Sleep(restartPause + restartPause/2) // a restart or two failed
	release()
	select {
	case <-s.up:
	case err := <-s.result:
		t.Fatalf("Supervise gave up: %v", err)
	case <-time.After(healWithin):
		t.Fatal("not restarted once the port was free")
	}
	queryOne[int](t, connect(t, c.URI("postgres")), "SELECT 1")
}

func TestSuperviseGivesUpWhenRestartsKeepFailing(t *testing.T) {
	t.Parallel()
	c := start(t, Options{})
	down, _ := takePortOnDeath(t, c)
	s := supervise(t, c, Supervision{MaxRestarts: 2, Down: down})
	if err := syscall.Kill(c.PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-s.result:
		if err == nil || !strings.Contains(err.Error(), "died or failed to restart 3 times") ||
			!strings.Contains(err.Error(), "restarting it failed") || !bindFailed([]byte(err.Error())) {
			t.Fatalf("Supervise: %v; want it to give up quoting the failed restart", err)
		}
	case <-s.up:
		t.Fatal("restarted on a taken port")
	case <-time.After(healWithin):
		t.Fatal("Supervise did not give up")
	}
}
