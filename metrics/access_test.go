package metrics_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tpcd/tpcd/internal/testcerts"
	"github.com/tpcd/tpcd/internal/testcluster"
	"github.com/tpcd/tpcd/metrics"
	"github.com/tpcd/tpcd/rpc"
)

func getWith(t *testing.T, hc *http.Client, url, token string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func refused(t *testing.T, opts metrics.ServerOptions, reason string) float64 {
	return testcluster.Counter(t, opts.Registry, "tpcd_observer_requests_refused_total", "reason", reason)
}

// TestListenerTakesTheRPCTokens: with tokens on the RPC port, the listener
// answers /metrics, /readyz and the page only to callers with one of them;
// /healthz answers anyone.
func TestListenerTakesTheRPCTokens(t *testing.T) {
	health := &metrics.Health{}
	health.SetReady(func() error { return nil })
	opts := metrics.ServerOptions{
		Registry: metrics.NewRegistry(), Health: health,
		Page:         http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "page") }),
		Auth:         rpc.Auth{ClientToken: "client-tok", PeerToken: "peer-tok"},
		RefusalDelay: -1,
	}
	url := serve(t, opts)
	hc := http.DefaultClient
	for _, path := range []string{"/metrics", "/readyz", "/"} {
		for token, want := range map[string]int{"": 401, "wrong": 401, "client-tok": 200, "peer-tok": 200} {
			if got := getWith(t, hc, url+path, token); got != want {
				t.Errorf("%s with token %q: %d, want %d", path, token, got, want)
			}
		}
	}
	if got := getWith(t, hc, url+"/healthz", ""); got != 200 {
		t.Errorf("/healthz without token: %d, want 200", got)
	}
	if got := refused(t, opts, "unauthorized"); got != 6 {
		t.Errorf("unauthorized refusals counted %v, want 6", got)
	}

	// Only a client token on the RPC port: the peer methods are closed
	// there, and the listener takes the client token alone.
	opts = metrics.ServerOptions{Registry: metrics.NewRegistry(), Health: health, Auth: rpc.Auth{ClientToken: "client-tok"}, RefusalDelay: -1}
	url = serve(t, opts)
	if got := getWith(t, hc, url+"/readyz", ""); got != 401 {
		t.Errorf("client token only, /readyz without token: %d, want 401", got)
	}
	if got := getWith(t, hc, url+"/readyz", "client-tok"); got != 200 {
		t.Errorf("client token only, /readyz with it: %d, want 200", got)
	}
}

// TestRateLimit: requests share one bucket; /metrics and the page get 429
// when it is empty, probes are answered anyway (late); callers refused for
// want of a token spend none of it.
func TestRateLimit(t *testing.T) {
	health := &metrics.Health{}
	health.SetReady(func() error { return errors.New("log database: down") })
	opts := metrics.ServerOptions{
		Registry: metrics.NewRegistry(), Health: health,
		Page: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "page") }),
		Auth: rpc.Auth{ClientToken: "tok"},
		// A bucket that never refills within the test: every count below
		// is exact.
		Rate: 1e-9, Burst: 4,
		RefusalDelay: -1,
	}
	url := serve(t, opts)
	hc := http.DefaultClient
	for range 20 {
		if got := getWith(t, hc, url+"/", ""); got != 401 {
			t.Fatalf("page without token: %d", got)
		}
	}
	var ok, limited int
	for i := range 10 {
		path := []string{"/", "/metrics"}[i%2]
		switch got := getWith(t, hc, url+path, "tok"); got {
		case 200:
			ok++
		case 429:
			limited++
		default:
			t.Fatalf("%s: %d", path, got)
		}
	}
	if ok != 4 || limited != 6 {
		t.Errorf("10 requests after 20 refused ones: %d answered, %d limited; want the burst of 4 answered", ok, limited)
	}
	for range 50 {
		if got := getWith(t, hc, url+"/readyz", "tok"); got != 503 {
			t.Fatalf("/readyz with the bucket empty: %d, want the node's own 503", got)
		}
		if got := getWith(t, hc, url+"/healthz", ""); got != 200 {
			t.Fatalf("/healthz with the bucket empty: %d, want 200", got)
		}
	}
	if got := refused(t, opts, "rate_limited"); got != 6 {
		t.Errorf("rate_limited refusals counted %v, want 6", got)
	}
	if got := testcluster.Counter(t, opts.Registry, "tpcd_observer_probes_slowed_total"); got != 100 {
		t.Errorf("probes slowed %v, want all 100 sent with the bucket empty", got)
	}
}

// TestListenerMutualTLS: with the RPC port's mutual TLS, the listener
// serves TLS, requires a client certificate of the cluster's CA on every
// path but /healthz, and lets /healthz through without one (probes of
// orchestrators often cannot present one).
func TestListenerMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca := testcerts.NewCA(t, dir, "cluster")
	server, client := ca.Issue(t, "node"), ca.Issue(t, "prometheus")
	serverTLS, err := rpc.TLSFiles{Cert: server.Cert, Key: server.Key, CA: ca.File}.ServerTLS()
	if err != nil {
		t.Fatal(err)
	}
	withCert, err := rpc.TLSFiles{Cert: client.Cert, Key: client.Key, CA: ca.File}.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	withoutCert := withCert.Clone()
	withoutCert.Certificates = nil
	withoutCert.GetClientCertificate = nil

	health := &metrics.Health{}
	health.SetReady(func() error { return nil })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := metrics.Serve(ln, metrics.ServerOptions{Registry: metrics.NewRegistry(), Health: health, TLS: serverTLS, Logger: testcluster.Logger(t)})
	t.Cleanup(func() { s.Close() })
	url := "https://" + ln.Addr().String()

	certified := &http.Client{Transport: &http.Transport{TLSClientConfig: withCert}}
	anonymous := &http.Client{Transport: &http.Transport{TLSClientConfig: withoutCert}}
	defer certified.CloseIdleConnections()
	defer anonymous.CloseIdleConnections()
	for path, want := range map[string][2]int{"/metrics": {200, 401}, "/readyz": {200, 401}, "/healthz": {200, 200}} {
		if got := getWith(t, certified, url+path, ""); got != want[0] {
			t.Errorf("%s with a certificate: %d, want %d", path, got, want[0])
		}
		if got := getWith(t, anonymous, url+path, ""); got != want[1] {
			t.Errorf("%s without a certificate: %d, want %d", path, got, want[1])
		}
	}
	// Plain HTTP gets nothing.
	if resp, err := http.Get("http://" + ln.Addr().String() + "/healthz"); err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || !strings.Contains(string(body), "HTTPS") {
			t.Errorf("plain HTTP to the TLS listener: %d %q", resp.StatusCode, body)
		}
	}
}

// TestFloodersAreSlowed: a refusal is answered only after RefusalDelay, so
// a caller flooding over one connection waits that long per request; and
// the listener serves at most MaxConns connections at once.
func TestFloodersAreSlowed(t *testing.T) {
	health := &metrics.Health{}
	health.SetReady(func() error { return nil })
	const delay = 300 * time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := metrics.Serve(ln, metrics.ServerOptions{
		Registry: metrics.NewRegistry(), Health: health, Logger: testcluster.Logger(t),
		Auth: rpc.Auth{ClientToken: "tok"}, RefusalDelay: delay,
		Rate: 1e-9, Burst: 1,
	})
	t.Cleanup(func() { s.Close() })
	url := "http://" + ln.Addr().String()

	oneShot := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	began := time.Now()
	if got := getWith(t, oneShot, url+"/readyz", ""); got != 401 {
		t.Fatalf("/readyz without token: %d", got)
	}
	if took := time.Since(began); took < delay {
		t.Errorf("a refusal came after %s, before the delay of %s", took, delay)
	}
	// The bucket's one token goes to the first probe; the second is
	// answered all the same, late.
	for i := range 2 {
		began = time.Now()
		if got := getWith(t, oneShot, url+"/readyz", "tok"); got != 200 {
			t.Fatalf("probe %d: %d, want 200", i, got)
		}
		if took := time.Since(began); i == 1 && took < delay {
			t.Errorf("a probe beyond the bucket came after %s, before the delay of %s", took, delay)
		}
	}

	// Two connections held open take both slots of a listener: a third is
	// not served until one of them closes. (A listener of its own, whose
	// bucket and delay stay out of the way.)
	ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s = metrics.Serve(ln, metrics.ServerOptions{
		Registry: metrics.NewRegistry(), Health: health, Logger: testcluster.Logger(t),
		RefusalDelay: -1, MaxConns: 2,
	})
	t.Cleanup(func() { s.Close() })
	url = "http://" + ln.Addr().String()
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		// A request answered proves the connection was accepted.
		io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		if _, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	third := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: delay}
	if resp, err := third.Get(url + "/healthz"); err == nil {
		resp.Body.Close()
		t.Fatalf("a third connection was served while two held the listener's two slots")
	}
	held[0].Close()
	third.Timeout = time.Minute
	resp, err := third.Get(url + "/healthz")
	if err != nil {
		t.Fatalf("after a slot was freed: %v", err)
	}
	resp.Body.Close()
	held[1].Close()
}

// TestStandbyReadiness: a standby is not ready to plain /readyz, ready to
// /readyz?standby=ready, and nothing else passes for ready that way.
func TestStandbyReadiness(t *testing.T) {
	health := &metrics.Health{}
	url := serve(t, metrics.ServerOptions{Registry: metrics.NewRegistry(), Health: health, RefusalDelay: -1})
	hc := http.DefaultClient
	check := func(state, path string, want int) {
		t.Helper()
		if got := getWith(t, hc, url+path, ""); got != want {
			t.Errorf("%s: %s answered %d, want %d", state, path, got, want)
		}
	}
	check("recovering", "/readyz?standby=ready", 503)
	health.Standby()
	check("standby", "/readyz", 503)
	check("standby", "/readyz?standby=ready", 200)
	check("standby", "/readyz?standby=yes", 503)
	health.SetReady(func() error { return errors.New("log database: down") })
	check("down", "/readyz?standby=ready", 503)
	health.SetReady(func() error { return nil })
	check("serving", "/readyz", 200)
	check("serving", "/readyz?standby=ready", 200)
}
