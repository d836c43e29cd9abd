package localcluster

import (
	"context"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/internal/testbin"
	"github.com/tpcd/tpcd/internal/testcluster"
	"github.com/tpcd/tpcd/rpc"
)

// tempRoot points os.TempDir at a fresh directory the postgres user can
// use, so the test can see what the embedded clusters leave behind.
func tempRoot(t *testing.T) string {
	t.Helper()
	dir := testbin.ServerTempDir(t)
	t.Setenv("TMPDIR", dir)
	return dir
}

func TestStartCommitStop(t *testing.T) {
	tmp := tempRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := Start(ctx, Options{Participants: 2, LazyPrepared: true})
	if err != nil {
		t.Fatal(err)
	}
	var table strings.Builder
	c.PrintTable(&table)
	for _, want := range []string{"coordinator", "participant-0", "participant-1", c.CoordinatorAddr()} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}

	if err := testcluster.CommitOn(ctx, c.CoordinatorAddr(), 2, "CREATE TABLE t (k int)"); err != nil {
		t.Fatalf("create table: %v", err)
	}

	// The nodes reached each other with their peer token; a stranger on
	// this machine, without it, reaches no node-to-node method, and still
	// the health check.
	for _, n := range c.Nodes {
		peer := rpc.NewClient(n.Addr, rpc.ClientOptions{Stream: true})
		defer peer.Close()
		for _, m := range []engine.Message{
			engine.ExecRequest{TxID: 99, SQL: "CREATE TABLE forged (k int)"},
			engine.DecisionRequest{TxID: 99, Outcome: engine.OutcomeCommit},
			engine.VoteMessage{TxID: 99, Vote: engine.VoteYes},
		} {
			if err := peer.Call(ctx, m.Method(), m, nil); !rpc.IsCode(err, rpc.CodeUnauthorized) {
				t.Errorf("%s: %s without the peer token: %v, want code %d", n.Name, m.Method(), err, rpc.CodeUnauthorized)
			}
		}
		if err := peer.Call(ctx, api.MethodPing, struct{}{}, nil); err != nil {
			t.Errorf("%s: ping: %v", n.Name, err)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Fatalf("left behind: %v", left)
	}
}

// TestFailureHalfwayLeavesNothing fails start-ups and checks that nothing
// they took is left: no listening socket of this process, no directory. It
// guesses no port: the taken one is held by the test, and the failure after
// listening comes from a bad PostgreSQL directory.
func TestFailureHalfwayLeavesNothing(t *testing.T) {
	tmp := tempRoot(t)
	before := listeningPorts(t)

	// The coordinator's port is taken: the error says what to change.
	taken := testbin.Listen(t)
	port := taken.Addr().(*net.TCPAddr).Port
	_, err := Start(context.Background(), Options{Participants: 2, BasePort: port})
	if err == nil || !strings.Contains(err.Error(), "base-port") {
		t.Fatalf("err = %v, want a taken-port error naming --base-port", err)
	}
	taken.Close()

	// A bad PostgreSQL directory fails after listening on every node's
	// port: those are closed again, nothing is left in TMPDIR, and the
	// error says what to do.
	_, err = Start(context.Background(), Options{Participants: 2, PGBin: "/nonexistent/bin"})
	if err == nil {
		t.Fatal("start with a bogus --pg-bin succeeded")
	}
	if after := listeningPorts(t); !maps.Equal(after, before) {
		t.Errorf("listening before: %v, after the failed starts: %v", slices.Sorted(maps.Keys(before)), slices.Sorted(maps.Keys(after)))
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Fatalf("left behind after %v: %v", err, left)
	}
}

// listeningPorts are the TCP ports this process listens on, from
// /proc/net/tcp and this process's socket descriptors.
func listeningPorts(t *testing.T) map[int]bool {
	t.Helper()
	mine := map[string]bool{}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		link, err := os.Readlink("/proc/self/fd/" + fd.Name())
		if inode, ok := strings.CutPrefix(link, "socket:["); err == nil && ok {
			mine[strings.TrimSuffix(inode, "]")] = true
		}
	}
	ports := map[int]bool{}
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(table)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			f := strings.Fields(line)
			if len(f) < 10 || f[3] != "0A" || !mine[f[9]] {
				continue
			}
			_, hexPort, _ := strings.Cut(f[1], ":")
			if p, err := strconv.ParseInt(hexPort, 16, 32); err == nil {
				ports[int(p)] = true
			}
		}
	}
	return ports
}

// commitOnBoth commits a row on participants 0 and 1 in one transaction.
func commitOnBoth(ctx context.Context, c *Cluster, key int) error {
	return testcluster.CommitOn(ctx, c.CoordinatorAddr(), 2, "INSERT INTO t VALUES ($1)", key)
}

// TestKilledPostgresIsRestarted kills participant-0's postmaster: the node
// restarts it and the cluster commits again without help. A server that
// cannot be restarted ends the cluster through Failed.
func TestKilledPostgresIsRestarted(t *testing.T) {
	tempRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := Start(ctx, Options{Participants: 2, LazyPrepared: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := testcluster.CommitOn(ctx, c.CoordinatorAddr(), 2, "CREATE TABLE t (k int PRIMARY KEY)"); err != nil {
		t.Fatalf("create table: %v", err)
	}
	if err := commitOnBoth(ctx, c, 1); err != nil {
		t.Fatal(err)
	}

	pg := c.dbs[1].Embedded // participant-0's
	killed := time.Now()
	if err := syscall.Kill(pg.PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	attempts := 0
	for {
		attempts++
		err := commitOnBoth(ctx, c, 2)
		if err == nil {
			break
		}
		if time.Since(killed) > 30*time.Second {
			t.Fatalf("no commit within 30 s of the kill: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("committed %v after the kill, attempt %d", time.Since(killed).Round(time.Millisecond), attempts)

	// Unreadable configuration: the server runs on, but cannot start again.
	conf := filepath.Join(pg.Dir(), "postgresql.conf")
	if err := os.Chmod(conf, 0); err != nil {
		t.Fatal(err)
	}
	defer os.Chmod(conf, 0o600)
	if err := syscall.Kill(pg.PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-c.Failed():
		if !strings.Contains(err.Error(), "participant-0") || !strings.Contains(err.Error(), "restarting it failed") {
			t.Fatalf("Failed: %v; want it to name participant-0 and the failed restart", err)
		}
		t.Logf("Failed: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("Failed delivered nothing")
	}
}
