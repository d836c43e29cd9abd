package client

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/internal/testcerts"
	"github.com/tpcd/tpcd/node"
	"github.com/tpcd/tpcd/rpc"
)

// TestSecured talks to a coordinator that requires a client token and
// mutual TLS, through the command line's flags.
func TestSecured(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testcerts.NewCA(t, dir, "tpcd test CA")
	nodeCert := ca.Issue(t, "node")
	clientCert := ca.Issue(t, "client")
	files := rpc.TLSFiles{Cert: nodeCert.Cert, Key: nodeCert.Key, CA: ca.File}
	serverTLS, err := files.ServerTLS()
	if err != nil {
		t.Fatal(err)
	}
	clientTLS, err := files.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	tr := node.Transport{
		Auth:      rpc.Auth{ClientToken: "client-secret", PeerToken: "peer-secret"},
		PeerToken: "peer-secret",
		ServerTLS: serverTLS, ClientTLS: clientTLS,
	}
	c := startClusterWith(t, 1, engine.CoordinatorConfig{}, tr)
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("client-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bin := tpcdBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	run := func(args ...string) (string, string, int) {
		t.Helper()
		cmd := exec.CommandContext(ctx, bin, append([]string{"client", "--coordinator", c.CoordAddr}, args...)...)
		cmd.Env = cleanEnv()
		var out, errs strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errs
		code := 0
		if err := cmd.Run(); err != nil {
			ee, ok := err.(*exec.ExitError)
			if !ok {
				t.Fatal(err)
			}
			code = ee.ExitCode()
		}
		return out.String(), errs.String(), code
	}
	tlsFlags := []string{"--tls-ca", ca.File, "--tls-cert", clientCert.Cert, "--tls-key", clientCert.Key}

	// A refused connection, TLS or token, is exit status 2 (as psql's).
	_, errs, code := run("-c", "nodes")
	if code != 2 || !strings.HasPrefix(errs, "error: "+c.CoordAddr+" serves TLS: give --tls-ca FILE") {
		t.Fatalf("plain h2c against TLS: status %d, stderr %q", code, errs)
	}
	_, errs, code = run(append([]string{"-c", "nodes"}, tlsFlags...)...)
	if code != 2 || !strings.Contains(errs, "unauthorized") || !strings.Contains(errs, "--auth-token-file") {
		t.Fatalf("no token: status %d, stderr %q", code, errs)
	}
	out, errs, code := run(append([]string{"-c", "begin; @0 select 1 as one; commit", "--format", "csv", "--auth-token-file", tokenFile}, tlsFlags...)...)
	if code != 0 || !strings.Contains(out, "one\n1\n") || errs != "" {
		t.Fatalf("with token and TLS: status %d, stdout %q, stderr %q", code, out, errs)
	}
	// The peer token is not a client token.
	_, errs, code = run(append([]string{"-c", "nodes", "--auth-token", "peer-secret"}, tlsFlags...)...)
	if code != 2 || !strings.Contains(errs, "does not allow nodes") {
		t.Fatalf("peer token: status %d, stderr %q", code, errs)
	}
}
