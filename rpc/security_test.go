package rpc

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tpcd/tpcd/internal/testbin"
	"github.com/tpcd/tpcd/internal/testcerts"
)

// postAuth posts body as JSON with the given Authorization header (none
// if empty) and returns the status and the body of the answer.
func postAuth(t *testing.T, hc *http.Client, url, auth, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}

// rawPost sends body with the given Authorization header (none if empty)
// over HTTP/1.1 and returns the status and the JSON-RPC error code (0 for a
// result).
func rawPost(t *testing.T, hc *http.Client, url, auth, body string) (int, int) {
	t.Helper()
	status, raw := postAuth(t, hc, url, auth, body)
	var msg response
	if err := json.Unmarshal(raw, &msg); err != nil {
		t.Fatalf("body %q is not JSON-RPC: %v", raw, err)
	}
	if msg.Error != nil {
		return status, msg.Error.Code
	}
	return status, 0
}

func TestTokensAreRequired(t *testing.T) {
	const clientTok, peerTok = "client-secret-123", "peer-secret-456"
	logs := &testbin.SyncBuffer{}
	methods := newTestMethods().methods()
	methods["tpcd.vote"] = func(context.Context, json.RawMessage) (any, error) { return "voted", nil }
	methods[PingMethod] = func(context.Context, json.RawMessage) (any, error) { return "pong", nil }
	_, ln := startServer(t, "", ServerOptions{
		Methods: methods,
		Auth:    Auth{ClientToken: clientTok, PeerToken: peerTok},
		Logger:  slog.New(slog.NewTextHandler(logs, nil)),
	})
	url := "http://" + ln.Addr().String() + "/rpc"
	echo := `{"jsonrpc":"2.0","id":1,"method":"echo","params":{"text":"x"}}`
	vote := `{"jsonrpc":"2.0","id":1,"method":"tpcd.vote","params":{}}`
	ping := `{"jsonrpc":"2.0","id":1,"method":"tpcd.ping"}`
	cases := []struct {
		name, auth, body string
		status, code     int
	}{
		{"no header", "", echo, 401, CodeUnauthorized},
		{"wrong token", "Bearer nope", echo, 401, CodeUnauthorized},
		{"token as basic auth", "Basic " + clientTok, echo, 401, CodeUnauthorized},
		{"token prefix", "Bearer " + clientTok[:5], echo, 401, CodeUnauthorized},
		{"unauthenticated garbage body", "", `{"jsonrpc":`, 401, CodeUnauthorized},
		{"client token, client method", "Bearer " + clientTok, echo, 200, 0},
		{"scheme is case-insensitive", "bearer " + clientTok, echo, 200, 0},
		{"client token, peer method", "Bearer " + clientTok, vote, 403, CodeUnauthorized},
		{"peer token, peer method", "Bearer " + peerTok, vote, 200, 0},
		{"peer token, client method", "Bearer " + peerTok, echo, 403, CodeUnauthorized},
		{"client token, ping", "Bearer " + clientTok, ping, 200, 0},
		{"peer token, ping", "Bearer " + peerTok, ping, 200, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, code := rawPost(t, http.DefaultClient, url, tc.auth, tc.body)
			if status != tc.status || code != tc.code {
				t.Fatalf("HTTP %d code %d, want HTTP %d code %d", status, code, tc.status, tc.code)
			}
		})
	}

	// A batch mixing methods the token allows and does not: each request
	// gets its own answer.
	status, raw := postAuth(t, http.DefaultClient, url, "Bearer "+clientTok, "["+echo+","+strings.Replace(vote, `"id":1`, `"id":2`, 1)+"]")
	var answers []response
	if err := json.Unmarshal(raw, &answers); err != nil || len(answers) != 2 {
		t.Fatalf("batch answer %q", raw)
	}
	for _, r := range answers {
		if sameID(r.ID, 1) && r.Error != nil || sameID(r.ID, 2) && (r.Error == nil || r.Error.Code != CodeUnauthorized) {
			t.Fatalf("batch answer %q", raw)
		}
	}
	if status != 200 {
		t.Fatalf("batch: HTTP %d", status)
	}

	// The Go client sends its token.
	ctx := context.Background()
	good := NewClient(ln.Addr().String(), ClientOptions{Token: clientTok})
	defer good.Close()
	var got echoParams
	if err := good.Call(ctx, "echo", echoParams{Text: "hi"}, &got); err != nil || got.Text != "hi" {
		t.Fatalf("client with token: %+v, %v", got, err)
	}
	bad := NewClient(ln.Addr().String(), ClientOptions{Token: "wrong"})
	defer bad.Close()
	if err := bad.Call(ctx, "echo", echoParams{Text: "hi"}, nil); !IsCode(err, CodeUnauthorized) {
		t.Fatalf("client with wrong token: %v, want code %d", err, CodeUnauthorized)
	}

	out := logs.String()
	if !strings.Contains(out, "not authenticated") || !strings.Contains(out, "wrong token") {
		t.Fatalf("refusals not logged:\n%s", out)
	}
	for _, secret := range []string{clientTok, peerTok, clientTok[:5]} {
		if strings.Contains(out, secret) {
			t.Fatalf("log reveals a token (%q):\n%s", secret, out)
		}
	}
}

func TestOpenRoleWithoutToken(t *testing.T) {
	// Only a peer token: client methods stay open, peer methods need it.
	methods := newTestMethods().methods()
	methods["tpcd.vote"] = func(context.Context, json.RawMessage) (any, error) { return "voted", nil }
	_, ln := startServer(t, "", ServerOptions{Methods: methods, Auth: Auth{PeerToken: "p"}})
	url := "http://" + ln.Addr().String() + "/rpc"
	if s, c := rawPost(t, http.DefaultClient, url, "", `{"jsonrpc":"2.0","id":1,"method":"echo","params":{}}`); s != 200 || c != 0 {
		t.Fatalf("open client method: HTTP %d code %d", s, c)
	}
	if s, c := rawPost(t, http.DefaultClient, url, "", `{"jsonrpc":"2.0","id":1,"method":"tpcd.vote","params":{}}`); s != 403 || c != CodeUnauthorized {
		t.Fatalf("peer method without token: HTTP %d code %d", s, c)
	}
}

// TestClientTokenAloneClosesPeerMethods: a server whose only token is a
// client token must not serve peer methods to callers without one (they
// would run SQL through a node whose clients need a token); the client
// token does not open them either. PeersWithoutToken is the explicit way
// back to open peer methods.
func TestClientTokenAloneClosesPeerMethods(t *testing.T) {
	methods := newTestMethods().methods()
	methods["tpcd.exec"] = func(context.Context, json.RawMessage) (any, error) { return "ran", nil }
	methods[PingMethod] = func(context.Context, json.RawMessage) (any, error) { return "pong", nil }
	peerCall := `{"jsonrpc":"2.0","id":1,"method":"tpcd.exec","params":{}}`
	clientCall := `{"jsonrpc":"2.0","id":1,"method":"echo","params":{}}`
	ping := `{"jsonrpc":"2.0","id":1,"method":"tpcd.ping","params":{}}`

	_, ln := startServer(t, "", ServerOptions{Methods: methods, Auth: Auth{ClientToken: "c"}})
	url := "http://" + ln.Addr().String() + "/rpc"
	for _, tc := range []struct {
		name, auth, body string
		status, code     int
	}{
		{"peer method, no token", "", peerCall, 401, CodeUnauthorized},
		{"peer method, client token", "Bearer c", peerCall, 403, CodeUnauthorized},
		{"client method, no token", "", clientCall, 401, CodeUnauthorized},
		{"client method, client token", "Bearer c", clientCall, 200, 0},
		{"ping, client token", "Bearer c", ping, 200, 0},
		{"ping, no token", "", ping, 401, CodeUnauthorized},
	} {
		if s, c := rawPost(t, http.DefaultClient, url, tc.auth, tc.body); s != tc.status || c != tc.code {
			t.Errorf("%s: HTTP %d code %d, want %d %d", tc.name, s, c, tc.status, tc.code)
		}
	}
	// Over a batch stream, as peers call, the same.
	stream := NewClient(ln.Addr().String(), ClientOptions{Token: "c", Stream: true})
	defer stream.Close()
	if err := stream.Call(context.Background(), "tpcd.exec", struct{}{}, nil); !IsCode(err, CodeUnauthorized) {
		t.Errorf("peer method over a stream with the client token: %v, want code %d", err, CodeUnauthorized)
	}

	_, ln = startServer(t, "", ServerOptions{Methods: methods, Auth: Auth{ClientToken: "c", PeersWithoutToken: true}})
	url = "http://" + ln.Addr().String() + "/rpc"
	if s, c := rawPost(t, http.DefaultClient, url, "", peerCall); s != 200 || c != 0 {
		t.Errorf("PeersWithoutToken, peer method without token: HTTP %d code %d", s, c)
	}
	// Open peer methods make a caller without a token a peer, which may not
	// call client methods: refused as a whole, as a wrong kind of token is.
	if s, c := rawPost(t, http.DefaultClient, url, "", clientCall); s != 403 || c != CodeUnauthorized {
		t.Errorf("PeersWithoutToken, client method without token: HTTP %d code %d", s, c)
	}
}

func TestCallerReachesHandlers(t *testing.T) {
	got := make(chan Caller, 1)
	methods := map[string]Handler{"who": func(ctx context.Context, _ json.RawMessage) (any, error) {
		c, _ := CallerOf(ctx)
		got <- c
		return nil, nil
	}}
	_, ln := startServer(t, "", ServerOptions{Methods: methods, Auth: Auth{ClientToken: "t"}})
	c := NewClient(ln.Addr().String(), ClientOptions{Token: "t"})
	defer c.Close()
	if err := c.Call(context.Background(), "who", nil, nil); err != nil {
		t.Fatal(err)
	}
	caller := <-got
	if caller.Host() != "127.0.0.1" || !caller.Authenticated || caller.Roles&RoleClient == 0 {
		t.Fatalf("caller %+v", caller)
	}
}

// tlsSetup is a CA, a server certificate and a client certificate, plus a
// certificate from a second, unrelated CA.
type tlsSetup struct {
	ca             *testcerts.CA
	server, client TLSFiles
	stranger       TLSFiles
}

func newTLSSetup(t *testing.T) tlsSetup {
	dir := t.TempDir()
	ca := testcerts.NewCA(t, dir, "tpcd-test")
	other := testcerts.NewCA(t, dir, "stranger")
	srv, cli, str := ca.Issue(t, "server"), ca.Issue(t, "client"), other.Issue(t, "mallory")
	return tlsSetup{
		ca:       ca,
		server:   TLSFiles{Cert: srv.Cert, Key: srv.Key, CA: ca.File},
		client:   TLSFiles{Cert: cli.Cert, Key: cli.Key, CA: ca.File},
		stranger: TLSFiles{Cert: str.Cert, Key: str.Key, CA: ca.File},
	}
}

func mustTLS(t *testing.T, build func() (*tls.Config, error)) *tls.Config {
	t.Helper()
	cfg, err := build()
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestMutualTLS(t *testing.T) {
	s := newTLSSetup(t)
	logs := &testbin.SyncBuffer{}
	serverTLS := mustTLS(t, s.server.ServerTLS)
	_, ln := startServer(t, "", ServerOptions{Methods: newTestMethods().methods(), TLS: serverTLS,
		Logger: slog.New(slog.NewTextHandler(io.MultiWriter(logs, t.Output()), nil))})
	addr := ln.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	call := func(opts ClientOptions) error {
		c := NewClient(addr, opts)
		defer c.Close()
		var got echoParams
		err := c.Call(ctx, "echo", echoParams{Text: "over tls"}, &got)
		if err == nil && got.Text != "over tls" {
			t.Fatalf("echo returned %+v", got)
		}
		return err
	}

	// A node with a certificate from the cluster's CA: served over h2, and
	// many calls share one connection.
	good := NewClient(addr, ClientOptions{TLS: mustTLS(t, s.client.ClientTLS)})
	defer good.Close()
	var wg sync.WaitGroup
	errs := make([]error, 20)
	for i := range errs {
		wg.Go(func() { errs[i] = good.Call(ctx, "echo", echoParams{Text: "x"}, nil) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("mutual TLS calls: %v", err)
	}
	if n := ln.accepted.Load(); n != 1 {
		t.Fatalf("%d connections for 20 calls over TLS, want 1 (HTTP/2)", n)
	}

	// Certificate from another CA: the handshake fails.
	// Go's client only offers a certificate the server's CA list names, so
	// force it, as an attacker would.
	strangerTLS := mustTLS(t, s.stranger.ClientTLS)
	strangerCert := strangerTLS.Certificates[0]
	strangerTLS.Certificates = nil
	strangerTLS.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &strangerCert, nil }
	err := call(ClientOptions{TLS: strangerTLS})
	if err == nil || !IsTransport(err) {
		t.Fatalf("stranger's certificate: %v, want a transport error", err)
	}
	t.Logf("stranger's certificate: %v", err)

	// No client certificate at all: refused too.
	err = call(ClientOptions{TLS: mustTLS(t, TLSFiles{CA: s.ca.File}.ClientTLS)})
	if err == nil || !IsTransport(err) {
		t.Fatalf("no client certificate: %v, want a transport error", err)
	}
	t.Logf("no client certificate: %v", err)

	// A client that does not trust the server's CA refuses the server.
	err = call(ClientOptions{TLS: &tls.Config{Certificates: mustTLS(t, s.client.ClientTLS).Certificates}})
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("untrusted server: %v, want a certificate error", err)
	}

	// Plain h2c to the TLS port: a clear transport error.
	err = call(ClientOptions{})
	if err == nil || !IsTransport(err) || !strings.Contains(err.Error(), "TLS") {
		t.Fatalf("plain text to a TLS port: %v, want a transport error that mentions TLS", err)
	}
	t.Logf("h2c to a TLS port: %v", err)

	// Plain HTTP/1.1 (curl without https): the server says what is wrong.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(conn, "POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	conn.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(body), "HTTPS") {
		t.Fatalf("HTTP/1.1 to a TLS port: %d %q", resp.StatusCode, body)
	}

	// The server kept serving through all of it.
	if err := good.Call(ctx, "echo", echoParams{Text: "still"}, nil); err != nil {
		t.Fatalf("after the bad handshakes: %v", err)
	}
	// The server logs a failed handshake after the client has heard of it.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		out := logs.String()
		if strings.Contains(out, "TLS handshake error") && strings.Contains(out, "unknown authority") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("handshake failures not logged:\n%s", out)
		}
	}
}

func TestTLSWithoutClientCertificates(t *testing.T) {
	s := newTLSSetup(t)
	// Without a CA the server does not ask for client certificates: plain
	// server-authenticated TLS, for clients that use tokens instead.
	serverTLS := mustTLS(t, TLSFiles{Cert: s.server.Cert, Key: s.server.Key}.ServerTLS)
	_, ln := startServer(t, "", ServerOptions{Methods: newTestMethods().methods(), TLS: serverTLS})
	c := NewClient(ln.Addr().String(), ClientOptions{TLS: mustTLS(t, TLSFiles{CA: s.ca.File}.ClientTLS)})
	defer c.Close()
	if err := c.Call(context.Background(), "echo", echoParams{Text: "x"}, nil); err != nil {
		t.Fatal(err)
	}
}

func TestTLSFilesErrors(t *testing.T) {
	s := newTLSSetup(t)
	for _, f := range []TLSFiles{
		{CA: s.ca.File},       // server without a certificate
		{Cert: s.server.Cert}, // no key
		{Cert: "/nonexistent", Key: "/nonexistent"},
		{Cert: s.server.Cert, Key: s.server.Key, CA: s.server.Key}, // not a certificate
	} {
		if _, err := f.ServerTLS(); err == nil {
			t.Errorf("ServerTLS(%+v) accepted", f)
		}
	}
}

func TestHeaderAndBodyLimits(t *testing.T) {
	_, ln := startServer(t, "", ServerOptions{Methods: newTestMethods().methods(), ReadTimeout: 300 * time.Millisecond})
	addr := ln.Addr().String()

	// Oversized headers: 431, and the server goes on.
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/rpc", strings.NewReader(`{}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Padding", strings.Repeat("a", 2*DefaultMaxHeaderBytes))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("huge header: HTTP %d, want 431", resp.StatusCode)
	}

	// A body that never finishes: the server drops the connection once the
	// read timeout passes instead of holding it.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"jsonrpc\"")
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	rest, _ := io.ReadAll(conn)
	if !strings.Contains(string(rest), "timeout") {
		t.Fatalf("slow body answered with %q, want a read timeout error", rest)
	}

	c := newTestClient(t, addr)
	if err := c.Call(context.Background(), "echo", echoParams{}, nil); err != nil {
		t.Fatalf("after the limits: %v", err)
	}
}
