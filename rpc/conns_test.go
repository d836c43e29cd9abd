package rpc

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// dialFrom connects to addr from the loopback address from (all of
// 127.0.0.0/8 is local on Linux), so that one test can be many clients.
func dialFrom(t *testing.T, from, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", from, err)
	}
	return conn
}

// upgradeFrom opens a batch stream from the address from and leaves it
// idle; ok is false when the server refused or closed the connection
// instead of switching.
func upgradeFrom(t *testing.T, from, addr string) (conn net.Conn, br *bufio.Reader, ok bool) {
	t.Helper()
	conn = dialFrom(t, from, addr)
	conn.SetDeadline(time.Now().Add(batchDeadline))
	defer conn.SetDeadline(time.Time{})
	io.WriteString(conn, "GET /rpc HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: "+StreamProtocol+"\r\n\r\n")
	br = bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return conn, br, false
	}
	return conn, br, resp.StatusCode == http.StatusSwitchingProtocols
}

// waitFor polls cond until it holds, failing the test after batchDeadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(batchDeadline); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
	}
}

// idleOf counts the idle connections of host.
func (t *connTracker) idleOf(host string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for tc := range t.idleConns() {
		if tc.host == host {
			n++
		}
	}
	return n
}

func (s *Server) streamCount() int {
	s.streams.mu.Lock()
	defer s.streams.mu.Unlock()
	return len(s.streams.all)
}

// TestIdleStreamFlood opens 3,000 batch streams from one address and
// leaves them idle, then 3,000 more from twelve others, against a server
// with the default caps. Every upgrade is answered (an idle stream makes
// room for a new one), but the server never holds more than the caps, and
// neither do its goroutines; the newest streams and a well-behaved client
// are served throughout. Before the caps, 5,000 idle streams took a
// coordinator to 496 MiB and halved its commits.
func TestIdleStreamFlood(t *testing.T) {
	srv, ln := startServer(t, "", ServerOptions{Methods: newTestMethods().methods()})
	addr := ln.Addr().String()
	base := runtime.NumGoroutine()
	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	flood := func(from string, n int) (last net.Conn, lastBr *bufio.Reader) {
		for range n {
			conn, br, ok := upgradeFrom(t, from, addr)
			conns = append(conns, conn)
			if !ok {
				t.Fatalf("stream %d from %s refused; idle ones should have made room", len(conns), from)
			}
			last, lastBr = conn, br
		}
		return last, lastBr
	}
	check := func(phase string, wantMax int, from string) {
		t.Helper()
		waitFor(t, "evicted streams gone", func() bool { return srv.streamCount() <= wantMax })
		open, ofHost := srv.conns.counts(from)
		if open > wantMax || ofHost > DefaultMaxConnsPerHost {
			t.Fatalf("%s: %d connections open, %d from %s; caps %d and %d", phase, open, ofHost, from, wantMax, DefaultMaxConnsPerHost)
		}
		alive := 0
		for _, c := range conns {
			if !peerClosed(c) {
				alive++
			}
		}
		if alive > wantMax {
			t.Fatalf("%s: %d of %d streams still open at the client's end, cap %d", phase, alive, len(conns), wantMax)
		}
		// Each stream is one goroutine at the server while it lives.
		waitFor(t, "goroutines of evicted streams ended", func() bool { return runtime.NumGoroutine() <= base+wantMax+32 })
		t.Logf("%s: %d streams opened, %d open at the server, %d alive at the client, %d goroutines (%d before)",
			phase, len(conns), open, alive, runtime.NumGoroutine(), base)
	}
	echo := func(conn net.Conn, br *bufio.Reader) {
		t.Helper()
		conn.SetDeadline(time.Now().Add(batchDeadline))
		if err := writeFrame(conn, []byte(`{"jsonrpc":"2.0","id":1,"method":"echo","params":{"text":"still here"}}`)); err != nil {
			t.Fatal(err)
		}
		reply, err := readFrame(br, 1<<20)
		if err != nil || decodeWire(t, reply).Error != nil {
			t.Fatalf("newest stream: %q %v", reply, err)
		}
	}
	client := NewClient(addr, ClientOptions{Stream: true})
	defer client.Close()
	call := func() {
		t.Helper()
		var out echoParams
		if err := client.Call(context.Background(), "echo", echoParams{Text: "hi"}, &out); err != nil || out.Text != "hi" {
			t.Fatalf("a client's call during the flood: %+v %v", out, err)
		}
	}

	call()
	echo(flood("127.0.0.1", 3000))
	check("one address", DefaultMaxConnsPerHost, "127.0.0.1")
	call()

	for i := range 12 {
		echo(flood(net.IPv4(127, 0, 0, byte(2+i)).String(), 250))
	}
	check("thirteen addresses", DefaultMaxConns, "127.0.0.2")
	call()
}

// TestConnCapRefusesOnlyWhenAllBusy: with every connection of an address
// busy, its next connection is refused (closed unanswered) rather than
// cut off a request in flight; once one is idle again it makes room, the
// longest idle first; other addresses are untouched.
func TestConnCapRefusesOnlyWhenAllBusy(t *testing.T) {
	m := newTestMethods()
	srv, ln := startServer(t, "", ServerOptions{Methods: m.methods(), MaxConnsPerHost: 3})
	addr := ln.Addr().String()
	ctx := context.Background()

	// Three streams, each held by a call in progress.
	busy := NewClient(addr, ClientOptions{Stream: true})
	defer busy.Close()
	done := make(chan error, 3)
	for range 3 {
		go func() { done <- busy.Call(ctx, "block", nil, nil) }()
		<-m.started
	}
	conn, _, ok := upgradeFrom(t, "127.0.0.1", addr)
	conn.Close()
	if ok {
		t.Fatal("a fourth connection was served while three calls held the address's three")
	}
	if _, _, ok := upgradeFrom(t, "127.0.0.2", addr); !ok {
		t.Fatal("another address was refused")
	}
	for range 3 {
		m.release <- struct{}{}
		if err := <-done; err != nil {
			t.Fatalf("blocked call: %v", err)
		}
	}
	// A stream counts as idle once its reply is written, which its client
	// may read first.
	waitFor(t, "the three streams idle", func() bool { return srv.conns.idleOf("127.0.0.1") == 3 })
	// The three streams now idle in busy's pool: a new connection closes
	// the oldest, not a busy one.
	oldest, _, ok := upgradeFrom(t, "127.0.0.1", addr)
	if !ok {
		t.Fatal("no room made from idle streams")
	}
	defer oldest.Close()
	var out echoParams
	if err := busy.Call(ctx, "echo", echoParams{Text: "x"}, &out); err != nil {
		t.Fatalf("a call after its idle stream may have been closed: %v", err)
	}
	for range 2 {
		c, _, ok := upgradeFrom(t, "127.0.0.1", addr)
		defer c.Close()
		if !ok {
			t.Fatal("no room made from idle streams")
		}
	}
	waitFor(t, "the longest idle stream closed", func() bool { return peerClosed(oldest) })
}

// A batch stream opened through Handler, on a server that is not the
// package's, counts too: over the cap it is answered 503 with CodeLimit,
// which the client returns as the server's answer.
func TestConnCapOnMountedHandler(t *testing.T) {
	m := newTestMethods()
	srv := NewServer(ServerOptions{Methods: m.methods(), MaxConnsPerHost: 1})
	addr := serveMux(t, srv.Handler(), srv)
	c := NewClient(addr, ClientOptions{Stream: true})
	defer c.Close()
	done := make(chan error, 1)
	go func() { done <- c.Call(context.Background(), "block", nil, nil) }()
	<-m.started
	err := c.Call(context.Background(), "echo", echoParams{Text: "x"}, nil)
	var rerr *Error
	if !errors.As(err, &rerr) || rerr.Code != CodeLimit {
		t.Fatalf("second stream over a cap of one, the first busy: %v, want code %d", err, CodeLimit)
	}
	m.release <- struct{}{}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var out echoParams
	if err := c.Call(context.Background(), "echo", echoParams{Text: "x"}, &out); err != nil {
		t.Fatalf("after the first finished: %v", err)
	}
}

// TestIdleConnectionFlood does the same with plain connections: two in
// three kept alive after one request, one in three never sending a byte. The
// server keeps no more than the cap of one address open, and answers
// throughout.
func TestIdleConnectionFlood(t *testing.T) {
	srv, ln := startServer(t, "", ServerOptions{Methods: newTestMethods().methods()})
	addr := ln.Addr().String()
	const body = `{"jsonrpc":"2.0","id":1,"method":"echo","params":{"text":"x"}}`
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range 3 * DefaultMaxConnsPerHost {
		conn := dialFrom(t, "127.0.0.1", addr)
		conns = append(conns, conn)
		if i%3 == 2 {
			continue
		}
		conn.SetDeadline(time.Now().Add(batchDeadline))
		io.WriteString(conn, "POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "+
			strconv.Itoa(len(body))+"\r\n\r\n"+body)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("request on connection %d: %v %v", i, resp, err)
		}
		resp.Body.Close()
		conn.SetDeadline(time.Time{})
	}
	waitFor(t, "idle connections closed down to the cap", func() bool {
		alive := 0
		for _, c := range conns {
			if !peerClosed(c) {
				alive++
			}
		}
		return alive <= DefaultMaxConnsPerHost
	})
	if open, _ := srv.conns.counts("127.0.0.1"); open > DefaultMaxConnsPerHost {
		t.Fatalf("%d connections open, cap %d", open, DefaultMaxConnsPerHost)
	}
}

// postFrom posts body over HTTP/1.1 from the loopback address from and
// returns the answer's JSON-RPC error code (0 for a result).
func postFrom(ctx context.Context, t *testing.T, from, url, body string) int {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	hc := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Error(err)
		return -1
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		t.Error(err)
		return -1
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if r := decodeWire(t, data); r.Error != nil {
		return r.Error.Code
	}
	return 0
}

// TestHandlerSlotsPerAddress: one address with as many waiting calls as
// the server runs handlers gets a quarter of them; another address's
// call still runs.
func TestHandlerSlotsPerAddress(t *testing.T) {
	m := newTestMethods()
	srv, ln := startServer(t, "", ServerOptions{Methods: m.methods(), MaxConcurrency: 8})
	url := "http://" + ln.Addr().String() + "/rpc"
	ctx := context.Background()
	done := make(chan int, 8)
	for range 8 {
		go func() { done <- postFrom(ctx, t, "127.0.0.1", url, `{"jsonrpc":"2.0","id":1,"method":"block"}`) }()
	}
	<-m.started
	<-m.started
	waitFor(t, "all eight calls at the server", func() bool {
		srv.hostSlots.mu.Lock()
		defer srv.hostSlots.mu.Unlock()
		sem := srv.hostSlots.hosts["127.0.0.1"]
		return sem != nil && sem.users == 8
	})
	cctx, cancel := context.WithTimeout(ctx, batchDeadline)
	defer cancel()
	if code := postFrom(cctx, t, "127.0.0.2", url, `{"jsonrpc":"2.0","id":1,"method":"echo","params":{"text":"x"}}`); code != 0 {
		t.Fatalf("another address's call while one holds its slots: code %d", code)
	}
	if n := len(m.started); n != 0 {
		t.Fatalf("%d more handlers of the first address started; its quarter is 2", n)
	}
	for range 8 {
		m.release <- struct{}{}
	}
	for range 8 {
		if code := <-done; code != 0 {
			t.Fatalf("blocked call: code %d", code)
		}
	}
}

// Over TLS the tracker learns of a connection from the listener (TCP) and
// of its state from net/http (TLS over it): closed connections of every
// transport must leave it, or an address would run out of room.
func TestConnCapForgetsClosedConnections(t *testing.T) {
	s := newTLSSetup(t)
	srv, ln := startServer(t, "", ServerOptions{Methods: newTestMethods().methods(), TLS: mustTLS(t, s.server.ServerTLS), MaxConnsPerHost: 4})
	addr := ln.Addr().String()
	clientTLS := mustTLS(t, s.client.ClientTLS)
	for i := range 12 {
		// h2, HTTP/1.1 and streams in turn, each client closed after one call.
		c := NewClient(addr, ClientOptions{TLS: clientTLS, HTTP1: i%3 == 1, Stream: i%3 == 2})
		var out echoParams
		if err := c.Call(context.Background(), "echo", echoParams{Text: "x"}, &out); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		c.Close()
	}
	waitFor(t, "closed connections forgotten", func() bool {
		open, ofHost := srv.conns.counts("127.0.0.1")
		return open == 0 && ofHost == 0
	})
}
