package security

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/internal/pgtest"
	"github.com/tpcd/tpcd/internal/testbin"
	"github.com/tpcd/tpcd/internal/testcerts"
	"github.com/tpcd/tpcd/rpc"
)

func TestMain(m *testing.M) { os.Exit(testbin.Main(m, pgtest.Main)) }

// withPassword puts a password into a test database URI. The test server
// trusts local connections, so it is accepted and ignored: only whether
// it leaks matters.
func withPassword(uri, pw string) string {
	return strings.Replace(uri, "://postgres@", "://postgres:"+pw+"@", 1)
}

// observer reads a metrics listener as Prometheus or a probe would.
type observer struct {
	hc    *http.Client
	base  string // scheme://host:port
	token string
}

func (o observer) get(path string) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, o.base+path, nil)
	if err != nil {
		return 0, "", err
	}
	if o.token != "" {
		req.Header.Set("Authorization", "Bearer "+o.token)
	}
	resp, err := o.hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

func (o observer) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		code, body, err := o.get("/readyz")
		if err == nil && code == 200 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never became ready: %d %q %v", o.base, code, body, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func metricValue(t *testing.T, text, series string) float64 {
	t.Helper()
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no series %s", series)
	return 0
}

func TestSecureClusterOfProcesses(t *testing.T) {
	const password = "pw-Sup3rSecret"
	token := "tok-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ca := testcerts.NewCA(t, dir, "cluster")
	stranger := testcerts.NewCA(t, dir, "stranger")

	logDBs := []string{withPassword(pgtest.NewDB(t), password), withPassword(pgtest.NewDB(t), password)}
	dataDBs := []string{withPassword(pgtest.NewDB(t), password), withPassword(pgtest.NewDB(t), password)}
	coordLogDB := withPassword(pgtest.NewDB(t), password)
	// Every node serves RPC and metrics on ports the test holds and passes
	// to it.
	coordPorts, partPorts := testbin.HoldPorts(t, 2), [][]*testbin.Port{testbin.HoldPorts(t, 2), testbin.HoldPorts(t, 2)}
	coord, parts := coordPorts[0].Addr, []string{partPorts[0][0].Addr, partPorts[1][0].Addr}
	coordMetrics, partMetrics := coordPorts[1].Addr, []string{partPorts[0][1].Addr, partPorts[1][1].Addr}
	tlsArgs := func(name string) []string {
		p := ca.Issue(t, name)
		return []string{"--tls-cert", p.Cert, "--tls-key", p.Key, "--tls-ca", ca.File}
	}
	var procs []*testbin.Proc
	for i, addr := range parts {
		args := append([]string{"participant", "--node-id", strconv.Itoa(i), "--host", addr, "--coordinator", coord,
			"--log-db", logDBs[i], "--data-db", dataDBs[i],
			"--auth-token-file", tokenFile, "--metrics-addr", partMetrics[i]}, tlsArgs(fmt.Sprintf("participant-%d", i))...)
		procs = append(procs, testbin.StartServing(t, testbin.Binary(t), nil, partPorts[i], args...))
	}
	args := append([]string{"coordinator", "--host", coord, "--participant", parts[0], "--participant", parts[1],
		"--log-db", coordLogDB, "--metrics-addr", coordMetrics}, tlsArgs("coordinator")...)
	// The token comes from the environment here, from a file above.
	procs = append(procs, testbin.StartServing(t, testbin.Binary(t), []string{"TPCD_AUTH_TOKEN=" + token}, coordPorts, args...))

	clientPair := ca.Issue(t, "client")
	clientTLS, err := rpc.TLSFiles{Cert: clientPair.Cert, Key: clientPair.Key, CA: ca.File}.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	// The metrics listeners take the RPC port's TLS (a client certificate
	// of the cluster's CA) and token.
	scraper := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS}}
	defer scraper.CloseIdleConnections()
	coordObs := observer{hc: scraper, base: "https://" + coordMetrics, token: token}
	partObs := []observer{{hc: scraper, base: "https://" + partMetrics[0], token: token}, {hc: scraper, base: "https://" + partMetrics[1], token: token}}
	coordObs.waitReady(t)
	for _, o := range partObs {
		o.waitReady(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client := rpc.NewClient(coord, rpc.ClientOptions{Token: token, TLS: clientTLS})
	defer client.Close()

	// A transaction across both participants, every hop over mutual TLS
	// with tokens.
	var b engine.BeginReply
	if err := client.Call(ctx, api.MethodBegin, struct{}{}, &b); err != nil {
		t.Fatalf("begin over TLS with token: %v", err)
	}
	for i := range 2 {
		n := engine.NodeID(i)
		for _, sql := range []string{"CREATE TABLE kv (k int PRIMARY KEY, v text)", "INSERT INTO kv VALUES (1, 'tls')"} {
			if err := client.Call(ctx, api.MethodExec, api.ExecParams{TxID: b.TxID, Node: &n, SQL: sql}, nil); err != nil {
				t.Fatalf("exec on %d: %v", i, err)
			}
		}
	}
	var out engine.OutcomeReply
	if err := client.Call(ctx, api.MethodCommit, api.TxParams{TxID: b.TxID}, &out); err != nil || out.Outcome != engine.OutcomeCommit {
		t.Fatalf("commit: %+v %v", out, err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		var st engine.StatusReply
		if err := client.Call(ctx, api.MethodStatus, api.TxParams{TxID: b.TxID}, &st); err != nil {
			t.Fatal(err)
		}
		if st.State == "committed" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never committed everywhere: %+v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Refusals: no token; a token but no certificate the cluster trusts;
	// plain text to the TLS port.
	noToken := rpc.NewClient(coord, rpc.ClientOptions{TLS: clientTLS})
	defer noToken.Close()
	if err := noToken.Call(ctx, api.MethodBegin, struct{}{}, nil); !rpc.IsCode(err, rpc.CodeUnauthorized) {
		t.Errorf("without token: %v, want code %d", err, rpc.CodeUnauthorized)
	}
	strangerPair := stranger.Issue(t, "mallory")
	strangerCert, err := tls.LoadX509KeyPair(strangerPair.Cert, strangerPair.Key)
	if err != nil {
		t.Fatal(err)
	}
	strangerTLS := clientTLS.Clone()
	strangerTLS.Certificates = nil
	strangerTLS.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &strangerCert, nil }
	mallory := rpc.NewClient(coord, rpc.ClientOptions{Token: token, TLS: strangerTLS})
	defer mallory.Close()
	if err := mallory.Call(ctx, api.MethodBegin, struct{}{}, nil); !rpc.IsTransport(err) {
		t.Errorf("certificate from another CA: %v, want a transport error", err)
	}
	plain := rpc.NewClient(coord, rpc.ClientOptions{Token: token})
	defer plain.Close()
	if err := plain.Call(ctx, api.MethodBegin, struct{}{}, nil); !rpc.IsTransport(err) || !strings.Contains(err.Error(), "TLS") {
		t.Errorf("plain text to the TLS port: %v, want a transport error naming TLS", err)
	}
	if err := client.Call(ctx, api.MethodNodes, struct{}{}, nil); err != nil {
		t.Fatalf("coordinator stopped serving after the refusals: %v", err)
	}

	// Metrics and the status page, over TLS with the token.
	_, text, err := coordObs.get("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if v := metricValue(t, text, "tpcd_transactions_committed_total"); v < 1 {
		t.Errorf("committed counter %v", v)
	}
	if v := metricValue(t, text, "tpcd_transactions_begun_total"); v < 1 {
		t.Errorf("begun counter %v", v)
	}
	_, ptext, err := partObs[0].get("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	// A branch votes yes, or, as the decider, answers committed.
	if v := metricValue(t, ptext, `tpcd_votes_total{vote="yes"}`) + metricValue(t, ptext, `tpcd_votes_total{vote="committed"}`); v < 1 {
		t.Errorf("participant yes and committed votes %v", v)
	}
	// The page shows the snapshot the coordinator refreshes every second.
	deadline = time.Now().Add(time.Minute)
	for {
		code, page, err := coordObs.get("/")
		if err == nil && code == 200 && strings.Contains(page, fmt.Sprintf(`id="tx-%d"`, b.TxID)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status page: %d %v\n%s", code, err, page)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Without the token, or without a certificate, only /healthz answers.
	tokenless := coordObs
	tokenless.token = ""
	certless := coordObs
	certless.hc = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: clientTLS.RootCAs}}}
	defer certless.hc.CloseIdleConnections()
	for _, o := range []observer{tokenless, certless} {
		for path, want := range map[string]int{"/metrics": 401, "/readyz": 401, "/": 401, "/healthz": 200} {
			if code, _, err := o.get(path); err != nil || code != want {
				t.Errorf("%s (token %v, certificate %v): %d %v, want %d", path, o.token != "", o.hc != scraper, code, err, want)
			}
		}
	}

	for _, p := range procs {
		p.Stop(t)
	}
	for _, p := range procs {
		logs := p.Out.String()
		if strings.Contains(logs, password) || strings.Contains(logs, token) {
			t.Errorf("a secret leaked into the log of %v:\n%s", p.Cmd.Args, logs)
		}
		if !strings.Contains(logs, "xxxxx") {
			t.Errorf("log of %v never names its (redacted) database", p.Cmd.Args)
		}
	}
	if logs := procs[2].Out.String(); !strings.Contains(logs, "not authenticated") || !strings.Contains(logs, "TLS handshake error") {
		t.Errorf("refusals not logged by the coordinator:\n%s", logs)
	}
}

// TestSecretsStayOutOfHelpAndErrors checks --help and start-up failures.
func TestSecretsStayOutOfHelpAndErrors(t *testing.T) {
	const pw, token = "pw-HelpSecret", "tok-HelpSecret"
	env := append(os.Environ(), "TPCD_AUTH_TOKEN="+token, "TPCD_LOG_DB=postgresql://u:"+pw+"@127.0.0.1:1/x",
		"TPCD_DATA_DB=postgresql://u:"+pw+"@127.0.0.1:1/y")
	for _, args := range [][]string{{"--help"}, {"coordinator", "--help"}, {"participant", "--help"}} {
		cmd := exec.Command(testbin.Binary(t), args...)
		cmd.Env = env
		out, _ := cmd.CombinedOutput()
		if strings.Contains(string(out), pw) || strings.Contains(string(out), token) {
			t.Errorf("tpcd %v shows a secret:\n%s", args, out)
		}
		if args[0] != "--help" && !strings.Contains(string(out), "--auth-token") {
			t.Errorf("tpcd %v does not document --auth-token:\n%s", args, out)
		}
	}

	// The coordinator serves on a port the test holds and passes to it, and
	// fails on its database.
	host, participant := testbin.HoldPort(t), testbin.RefusingAddr(t)
	for _, uri := range []string{
		"postgresql://u:" + pw + "@127.0.0.1:1/x",        // nothing listens there
		"postgresql://u:" + pw + "@127.0.0.1:99999/x",    // bad port
		"postgresql://u:" + pw + "@[::1/x?sslmode=bogus", // unparsable
	} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cmd := testbin.CommandContext(ctx, testbin.Binary(t), []*testbin.Port{host}, "coordinator", "--host", host.Addr, "--participant", participant, "--log-db", uri)
		out, err := cmd.CombinedOutput()
		cancel()
		if err == nil {
			t.Errorf("coordinator with %s started", uri)
		}
		if strings.Contains(string(out), pw) {
			t.Errorf("error output shows the password:\n%s", out)
		}
		t.Logf("--log-db %s: %s", strings.ReplaceAll(uri, pw, "..."), bytes.TrimSpace(out))
	}

	// Inconsistent security flags are refused before anything starts.
	for _, args := range [][]string{
		{"--tls-cert", "/x.pem"},
		{"--tls-ca", "/ca.pem"},
		{"--auth-token", "a", "--auth-token-file", "/f"},
	} {
		all := append([]string{"coordinator", "--participant", "127.0.0.1:1"}, args...)
		out, err := exec.Command(testbin.Binary(t), all...).CombinedOutput()
		if err == nil {
			t.Errorf("tpcd %v accepted", all)
		}
		t.Logf("tpcd %v: %s", args, bytes.TrimSpace(out))
	}
}
