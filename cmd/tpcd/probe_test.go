package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestProbe: 200 from the listener is success, anything else a failure
// that says what the node answered; the token goes as a bearer token,
// taken from the environment a node reads its own from.
func TestProbe(t *testing.T) {
	ready := false
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Header.Get("Authorization") != "Bearer s3cret":
			http.Error(w, "unauthorized", http.StatusUnauthorized)
		case r.URL.Path != "/readyz":
			http.NotFound(w, r)
		case !ready:
			http.Error(w, "not ready: recovering", http.StatusServiceUnavailable)
		default:
			w.Write([]byte("ready\n"))
		}
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	probe := func(c ProbeCmd) error {
		c.Addr, c.Path, c.Timeout = addr, "/readyz", 2e9
		return c.Run(context.Background())
	}

	if err := probe(ProbeCmd{}); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("without a token: %v, want the node's 401", err)
	}
	t.Setenv("TPCD_PEER_TOKEN", "s3cret")
	if err := probe(ProbeCmd{}); err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "recovering") {
		t.Fatalf("not ready: %v, want the node's 503 and its reason", err)
	}
	ready = true
	if err := probe(ProbeCmd{}); err != nil {
		t.Fatalf("ready, token from TPCD_PEER_TOKEN: %v", err)
	}
	if err := probe(ProbeCmd{AuthToken: "wrong"}); err == nil {
		t.Fatal("--auth-token wrong: the flag must win over the environment")
	}
	srv.Close()
	if err := probe(ProbeCmd{}); err == nil {
		t.Fatal("a node that does not answer is not ready")
	}
}

// TestProbeStandbyReady: --standby-ready asks /readyz?standby=ready, and
// is refused where it would be ignored.
func TestProbeStandbyReady(t *testing.T) {
	var asked []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked = append(asked, r.URL.RequestURI())
		if r.URL.Query().Get("standby") != "ready" {
			http.Error(w, "not ready: standby: another coordinator holds the log's slot", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready: standby\n"))
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	if err := (&ProbeCmd{Addr: addr, Path: "/readyz", Timeout: 2e9}).Run(context.Background()); err == nil {
		t.Fatal("a standby passed plain /readyz")
	}
	if err := (&ProbeCmd{Addr: addr, Path: "/readyz", StandbyReady: true, Timeout: 2e9}).Run(context.Background()); err != nil {
		t.Fatalf("--standby-ready: %v", err)
	}
	want := []string{"/readyz", "/readyz?standby=ready"}
	if !slices.Equal(asked, want) {
		t.Fatalf("asked %q, want %q", asked, want)
	}
	for _, c := range []ProbeCmd{
		{Addr: addr, Path: "/healthz", StandbyReady: true},
		{Addr: addr, Path: "/readyz", StandbyReady: true, UntilSettled: time.Second},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("--standby-ready with --path %s, --until-settled %v: accepted, and it would be ignored", c.Path, c.UntilSettled)
		}
	}
}

// TestProbeUntilSettled: --until-settled waits for the node's in-doubt
// gauge to reach 0, and fails when it does not within the time given or
// the node has no such gauge.
func TestProbeUntilSettled(t *testing.T) {
	var inDoubt atomic.Int64
	inDoubt.Store(2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		n := inDoubt.Load()
		if n > 0 && n < 100 {
			inDoubt.Add(-1)
		}
		fmt.Fprintf(w, "# HELP tpcd_transactions_in_doubt In doubt.\n# TYPE tpcd_transactions_in_doubt gauge\ntpcd_transactions_in_doubt %d\n", n)
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	probe := func(d time.Duration) error {
		return (&ProbeCmd{Addr: addr, Path: "/readyz", UntilSettled: d, Timeout: 2 * time.Second}).Run(context.Background())
	}
	if err := probe(10 * time.Second); err != nil {
		t.Fatalf("in doubt 2, 1, then 0: %v", err)
	}
	if n := inDoubt.Load(); n != 0 {
		t.Fatalf("the probe returned with %d in doubt", n)
	}
	inDoubt.Store(100) // stays
	if err := probe(1500 * time.Millisecond); err == nil || !strings.Contains(err.Error(), "100 transactions in doubt") {
		t.Fatalf("stuck at 100 in doubt: %v, want a failure that says so", err)
	}
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "go_goroutines 7") })
	if err := probe(1500 * time.Millisecond); err == nil || !strings.Contains(err.Error(), "no tpcd_transactions_in_doubt") {
		t.Fatalf("no gauge: %v, want a failure that says so", err)
	}
}
