package localcluster

import (
	"context"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/rpc"
)

// tempRoot points os.TempDir at a fresh directory the postgres user can
// use, so the test can see what the embedded clusters leave behind.
func tempRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "tpcd-localcluster-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Setenv("TMPDIR", dir)
	t.Cleanup(func() { os.RemoveAll(dir) })
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
	for _, want := range []string{"coordinator", "participant-0", "participant-1", "tpcd client --coordinator " + c.CoordinatorAddr()} {
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

// TestFailureHalfwayLeavesNothing makes the last participant's port taken:
// start-up fails after listening on the others, and everything is undone.
func TestFailureHalfwayLeavesNothing(t *testing.T) {
	tmp := tempRoot(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	port := taken.Addr().(*net.TCPAddr).Port
	_, err = Start(context.Background(), Options{Participants: 2, BasePort: port - 2})
	if err == nil || !strings.Contains(err.Error(), "base-port") {
		t.Fatalf("err = %v, want a taken-port error naming --base-port", err)
	}
	// The ports it did take are free again.
	for p := port - 2; p < port; p++ {
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Fatalf("port %d still held: %v", p, err)
		}
		ln.Close()
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Fatalf("left behind: %v", left)
	}

	// A bad PostgreSQL directory fails after listening: nothing is left
	// either, and the error says what to do.
	_, err = Start(context.Background(), Options{Participants: 1, PGBin: "/nonexistent/bin"})
	if err == nil {
		t.Fatal("start with a bogus --pg-bin succeeded")
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Fatalf("left behind after %v: %v", err, left)
	}
}
