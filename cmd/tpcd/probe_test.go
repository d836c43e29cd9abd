package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
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
