package client

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tpcd/tpcd/internal/pgtest"
	"github.com/tpcd/tpcd/internal/testbin"
	"github.com/tpcd/tpcd/internal/testcerts"
	"github.com/tpcd/tpcd/metrics"
)

// runClient runs `tpcd client --coordinator addr args...` and returns its
// output and exit status.
func runClient(t *testing.T, addr string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return testbin.Run(t, tpcdBinary(t), cleanEnv(), "", append([]string{"client", "--coordinator", addr}, args...)...)
}

// testWrongAddress points the client at what is not a coordinator: each
// case gets one line saying what listens there and what to give instead,
// and exit status 2 (no coordinator), as psql's for a failed connection.
func testWrongAddress(t *testing.T, c *testCluster) {
	pgAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(pgtest.Cluster(t).Port()))
	httpAddr := serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Server", "test-web/1.0")
		http.NotFound(w, r)
	}))
	reg := metrics.NewRegistry()
	metrics.NewCoordinator(reg)
	metricsLn := testbin.Listen(t)
	metricsAddr := metricsLn.Addr().String()
	ms := metrics.Serve(metricsLn, metrics.ServerOptions{Registry: reg, Health: &metrics.Health{}})
	t.Cleanup(func() { ms.Close() })
	ca := testcerts.NewCA(t, t.TempDir(), "tpcd test CA")

	for _, tc := range []struct {
		name, addr string
		args       []string
		want       string
	}{
		{"participant", c.PartAddrs[1], nil,
			c.PartAddrs[1] + " is participant-1 of a tpcd cluster, not its coordinator: use --coordinator " + c.CoordAddr},
		{"postgresql", pgAddr, nil,
			pgAddr + " is a PostgreSQL server, not a tpcd coordinator (psql connects there): give --coordinator the coordinator's RPC address (its --host)"},
		{"metrics", metricsAddr, nil,
			metricsAddr + " is a tpcd node's metrics listener (its --metrics-addr: /metrics, /healthz, the status page), not its RPC address: give --coordinator the coordinator's RPC address (its --host)"},
		{"http", httpAddr, nil,
			httpAddr + " is an HTTP server (test-web/1.0) without tpcd's JSON-RPC endpoint /rpc: give --coordinator the coordinator's RPC address (its --host)"},
		{"tls-client-plain-coordinator", c.CoordAddr, []string{"--tls-ca", ca.File},
			c.CoordAddr + " serves plain HTTP, not TLS: leave out --tls-ca, --tls-cert and --tls-key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errs, code := runClient(t, tc.addr, append([]string{"-c", "nodes"}, tc.args...)...)
			if code != ExitConnection || out != "" || !strings.HasPrefix(errs, "error: "+tc.want+"\n") || strings.Count(errs, "\n") != 2 {
				t.Fatalf("status %d (want %d), stdout %q, stderr:\n%s\nwant it to start with the line\nerror: %s", code, ExitConnection, out, errs, tc.want)
			}
		})
	}

	// The interactive shell says it once and ends, rather than prompting
	// for commands that cannot work.
	tm := startTerminal(t, []string{"TERM=xterm", "HOME=" + t.TempDir()}, "client", "--coordinator", c.PartAddrs[0])
	if code := tm.exit(); code != ExitConnection {
		t.Fatalf("interactive: exit status %d, want %d", code, ExitConnection)
	}
	<-tm.Done()
	want := fmt.Sprintf("tpcd: error: %s is participant-0 of a tpcd cluster, not its coordinator: use --coordinator %s", c.PartAddrs[0], c.CoordAddr)
	// The terminal wraps the long line; a space that falls at the end of
	// a row is not kept there, so compare without either.
	squeeze := strings.NewReplacer("\n", "", " ", "").Replace
	if got := tm.scr.String(); squeeze(got) != squeeze(want) {
		t.Fatalf("interactive screen:\n%s\nwant:\n%s", got, want)
	}
}

// serveHTTP serves h on a loopback port until the test ends.
func serveHTTP(t *testing.T, h http.Handler) string {
	t.Helper()
	ln := testbin.Listen(t)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: time.Minute}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}
