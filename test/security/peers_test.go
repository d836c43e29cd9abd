package security

import (
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tpcd/tpcd/internal/pgtest"
	"github.com/tpcd/tpcd/internal/testbin"
)

// exitOutput runs cmd, which must exit on its own within a minute, and
// returns its output and whether it failed.
func exitOutput(t *testing.T, cmd *exec.Cmd) (string, bool) {
	t.Helper()
	var out testbin.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(time.Minute, func() { cmd.Process.Kill() })
	defer timer.Stop()
	err := cmd.Wait()
	return out.String(), err != nil
}

// wantRefusedStart checks that tpcd with args exits at start with an error
// naming why and the ways out.
func wantRefusedStart(t *testing.T, cmd *exec.Cmd, why string) {
	t.Helper()
	out, failed := exitOutput(t, cmd)
	if !failed {
		t.Errorf("tpcd %v started:\n%s", cmd.Args, out)
		return
	}
	for _, want := range []string{why, "--peer-token", "--tls-ca", "--insecure"} {
		if !strings.Contains(out, want) {
			t.Errorf("tpcd %v: the refusal does not say %q:\n%s", cmd.Args, want, out)
		}
	}
}

// TestNonLoopbackNodesNeedPeerCredentials runs nodes on a non-loopback
// address (in a network namespace of the test's own): without a peer token
// or mutual TLS they refuse to start; with a peer token they commit, and a
// stranger's forged node-to-node messages are refused; --insecure serves
// them without credentials, as it warns.
func TestNonLoopbackNodesNeedPeerCredentials(t *testing.T) {
	ns := newNetns(t)
	stranger := ns.outsider()
	// Nothing is listening there: the refusal comes before any database.
	nowhere := "postgresql://postgres@127.0.0.1:1/none"

	wantRefusedStart(t, ns.command(testbin.Binary(t), "participant", "--node-id", "0", "--host", ns.addr(), "--coordinator", ns.addr(),
		"--log-db", nowhere, "--data-db", nowhere), "is not a loopback address")
	wantRefusedStart(t, ns.command(testbin.Binary(t), "coordinator", "--host", ns.addr(), "--participant", ns.addr(), "--log-db", nowhere),
		"is not a loopback address")
	wantRefusedStart(t, ns.command(testbin.Binary(t), "participant", "--node-id", "0", "--host", ns.addr(), "--coordinator", ns.addr(),
		"--log-db", nowhere, "--data-db", nowhere, "--client-token", "c"), "only token is a client token")

	// With a peer token (from the environment) on every node.
	token := "peer-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	env := []string{"TPCD_PEER_TOKEN=" + token}
	coord, parts := ns.addr(), []string{ns.addr(), ns.addr()}
	var procs []*testbin.Proc
	for i, addr := range parts {
		procs = append(procs, ns.start(t, env, "participant", "--node-id", strconv.Itoa(i), "--host", addr, "--coordinator", coord,
			"--log-db", socketURI(t, pgtest.NewDB(t)), "--data-db", socketURI(t, pgtest.NewDB(t))))
	}
	procs = append(procs, ns.start(t, env, "coordinator", "--host", coord, "--participant", parts[0], "--participant", parts[1],
		"--log-db", socketURI(t, pgtest.NewDB(t))))
	ping := stranger.waitPing(t, coord, "") // clients need no token here, so the health check neither
	for _, p := range parts {
		stranger.waitPing(t, p, "")
	}
	stranger.transaction(t, coord, "", 2, "CREATE TABLE kv (k int)")

	stranger.sendForgeries(t, coord, parts[0], "", ping)
	stranger.sendForgeries(t, coord, parts[0], "not-the-token", ping)
	// The forged CREATE TABLE never ran: a client can create the table.
	stranger.transaction(t, coord, "", 1, "CREATE TABLE forged (k int)")

	for _, p := range procs {
		p.Stop(t)
	}
	logs := procs[2].Out.String()
	if !strings.Contains(logs, "no client token") || !strings.Contains(logs, "without TLS") {
		t.Errorf("the coordinator does not warn that clients need no token and traffic is plain:\n%s", logs)
	}
	if strings.Contains(logs, token) {
		t.Errorf("the peer token leaked into the log:\n%s", logs)
	}

	// --insecure: no credentials, served anyway, with a warning.
	addr := ns.addr()
	p := ns.start(t, nil, "participant", "--node-id", "0", "--host", addr, "--coordinator", ns.addr(), "--insecure",
		"--log-db", socketURI(t, pgtest.NewDB(t)), "--data-db", socketURI(t, pgtest.NewDB(t)))
	stranger.waitPing(t, addr, "")
	f := forgeries(ping.Cluster, ping.Epoch)[0]
	if a := stranger.post(t, addr, "", f.msg.Method(), f.msg); a.refused() || a.status != http.StatusOK {
		t.Errorf("--insecure: a stranger's %s got HTTP %d code %d, want it served", f.msg.Method(), a.status, a.code)
	}
	p.Stop(t)
	if logs := p.Out.String(); !strings.Contains(logs, "--insecure: --host "+addr+" is not a loopback address") {
		t.Errorf("--insecure gives no warning:\n%s", logs)
	}
}

// TestPeerRulesOnLoopback: client methods need the client token, peer
// methods the peer token, each refused the other's token; a client token
// alone is refused at start (whose peer methods would be open, or closed to
// its own peers).
func TestPeerRulesOnLoopback(t *testing.T) {
	host := testbin.HoldPort(t)
	for _, args := range [][]string{
		{"participant", "--node-id", "0", "--host", host.Addr, "--coordinator", testbin.RefusingAddr(t), "--client-token", "c"},
		{"coordinator", "--host", host.Addr, "--participant", testbin.RefusingAddr(t), "--client-token", "c"},
	} {
		wantRefusedStart(t, testbin.Command(testbin.Binary(t), []*testbin.Port{host}, args...), "only token is a client token")
	}

	const clientTok, peerTok = "client-tok-1", "peer-tok-2"
	env := []string{"TPCD_CLIENT_TOKEN=" + clientTok, "TPCD_PEER_TOKEN=" + peerTok}
	logDB, dataDB, coordDB := pgtest.NewDB(t), pgtest.NewDB(t), pgtest.NewDB(t)
	ports := testbin.HoldPorts(t, 2)
	coord, part := ports[0].Addr, ports[1].Addr
	procs := []*testbin.Proc{
		testbin.StartServing(t, testbin.Binary(t), env, ports[1:], "participant", "--node-id", "0", "--host", part, "--coordinator", coord, "--log-db", logDB, "--data-db", dataDB),
		testbin.StartServing(t, testbin.Binary(t), env, ports[:1], "coordinator", "--host", coord, "--participant", part, "--log-db", coordDB),
	}
	stranger := outsider{hc: http.DefaultClient}
	ping := stranger.waitPing(t, coord, clientTok)
	stranger.waitPing(t, part, peerTok)
	if a := stranger.post(t, coord, "", "tpcd.ping", struct{}{}); a.status != http.StatusUnauthorized {
		t.Errorf("ping without a token: HTTP %d, want 401", a.status)
	}

	stranger.transaction(t, coord, clientTok, 1, "CREATE TABLE kv (k int)")
	if a := stranger.post(t, coord, "", "begin", struct{}{}); a.status != http.StatusUnauthorized {
		t.Errorf("begin without a token: HTTP %d, want 401", a.status)
	}
	if a := stranger.post(t, coord, peerTok, "begin", struct{}{}); a.status != http.StatusForbidden {
		t.Errorf("begin with the peer token: HTTP %d, want 403", a.status)
	}
	stranger.sendForgeries(t, coord, part, "", ping)
	stranger.sendForgeries(t, coord, part, clientTok, ping)
	stranger.transaction(t, coord, clientTok, 1, "CREATE TABLE forged (k int)")
	for _, p := range procs {
		p.Stop(t)
	}
}

// TestClusterCommandSharesAPeerToken: `tpcd cluster` (what `make run`
// starts) gives its nodes a secret of their own; clients need nothing, and
// a stranger on the same machine sends node-to-node messages in vain.
func TestClusterCommandSharesAPeerToken(t *testing.T) {
	p := testbin.Start(t, testbin.Binary(t), nil, "cluster", "-n", "2", "--base-port", "0")
	var coord string
	var parts []string
	deadline := time.Now().Add(3 * time.Minute)
	for coord == "" {
		out := p.Out.String()
		if strings.Contains(out, "Connect with:") {
			for _, line := range strings.Split(out, "\n") {
				switch f := strings.Fields(line); {
				case len(f) >= 3 && f[0] == "coordinator":
					coord = f[2]
				case len(f) >= 3 && f[0] == "participant":
					parts = append(parts, f[2])
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tpcd cluster did not start:\n%s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if coord == "" || len(parts) != 2 {
		t.Fatalf("no addresses in the output of tpcd cluster:\n%s", p.Out)
	}
	stranger := outsider{hc: http.DefaultClient}
	ping := stranger.waitPing(t, coord, "")
	stranger.transaction(t, coord, "", 2, "CREATE TABLE kv (k int)")
	for _, part := range parts {
		stranger.sendForgeries(t, coord, part, "", ping)
	}
	stranger.transaction(t, coord, "", 2, "CREATE TABLE forged (k int)")
	p.Stop(t)
}
