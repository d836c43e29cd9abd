package localcluster

import (
	"context"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/internal/testbin"
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
	c, err := Start(ctx, Options{Participants: 2})
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

	cl := rpc.NewClient(c.CoordinatorAddr(), rpc.ClientOptions{})
	defer cl.Close()
	var b engine.BeginReply
	if err := cl.Call(ctx, api.MethodBegin, struct{}{}, &b); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		n := engine.NodeID(i)
		if err := cl.Call(ctx, api.MethodExec, api.ExecParams{TxID: b.TxID, Node: &n, SQL: "CREATE TABLE t (k int)"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	var r engine.OutcomeReply
	if err := cl.Call(ctx, api.MethodCommit, api.TxParams{TxID: b.TxID}, &r); err != nil || r.Outcome != engine.OutcomeCommit {
		t.Fatalf("commit: %v %+v", err, r)
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
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	port := taken.Addr().(*net.TCPAddr).Port
	_, err = Start(context.Background(), Options{Participants: 2, BasePort: port})
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
