package rpc

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// An HTTP/1.1 client does what an HTTP/2 one does, calls and batches, and
// reuses its connection for calls made one after another.
func TestHTTP1Client(t *testing.T) {
	m := newTestMethods()
	_, ln := startServer(t, "", ServerOptions{Methods: m.methods()})
	c := NewClient(ln.Addr().String(), ClientOptions{Logger: testLogger(t), HTTP1: true})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	for i := range 20 {
		var got echoParams
		if err := c.Call(ctx, "echo", echoParams{Text: "one", Count: i}, &got); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if got != (echoParams{Text: "one", Count: i}) {
			t.Fatalf("call %d returned %+v", i, got)
		}
	}
	var a, b echoParams
	calls := []BatchCall{
		{Method: "echo", Params: echoParams{Text: "a"}, Result: &a},
		{Method: "no-such-method"},
		{Method: "echo", Params: echoParams{Text: "b"}, Result: &b},
	}
	if err := c.CallBatch(ctx, calls); err != nil {
		t.Fatalf("batch: %v", err)
	}
	if calls[0].Err != nil || calls[2].Err != nil || a.Text != "a" || b.Text != "b" {
		t.Fatalf("batch results: %v %v %+v %+v", calls[0].Err, calls[2].Err, a, b)
	}
	if !IsCode(calls[1].Err, CodeMethodNotFound) {
		t.Fatalf("unknown method in batch: %v, want CodeMethodNotFound", calls[1].Err)
	}
	if n := ln.accepted.Load(); n != 1 {
		t.Fatalf("%d connections for sequential calls, want 1 (kept alive)", n)
	}
}

// Over TLS the HTTP/1.1 client verifies the server and presents its
// certificate; without TLS settings against a TLS port it fails with a
// clear transport error rather than hanging.
func TestHTTP1ClientTLS(t *testing.T) {
	s := newTLSSetup(t)
	_, ln := startServer(t, "", ServerOptions{Methods: newTestMethods().methods(), TLS: mustTLS(t, s.server.ServerTLS)})
	addr := ln.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	good := NewClient(addr, ClientOptions{TLS: mustTLS(t, s.client.ClientTLS), HTTP1: true})
	defer good.Close()
	var got echoParams
	if err := good.Call(ctx, "echo", echoParams{Text: "tls"}, &got); err != nil || got.Text != "tls" {
		t.Fatalf("HTTP/1.1 over mutual TLS: %+v, %v", got, err)
	}

	plain := NewClient(addr, ClientOptions{HTTP1: true})
	defer plain.Close()
	err := plain.Call(ctx, "echo", echoParams{Text: "plain"}, nil)
	if !IsTransport(err) {
		t.Fatalf("plain HTTP/1.1 to a TLS port: %v, want a transport error", err)
	}
	var terr *TransportError
	if !errors.As(err, &terr) || !strings.Contains(err.Error(), "this client needs TLS settings too") {
		t.Fatalf("plain HTTP/1.1 to a TLS port: %q does not point at TLS", err)
	}
}

// An informational response before the real one (a proxy may send 103
// Early Hints) is skipped, and the connection then carries the next call
// with the next response, not the one left behind.
func TestHTTP1ClientSkipsInformational(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		br := bufio.NewReader(conn)
		for i := 1; ; i++ {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			body, _ := io.ReadAll(req.Body)
			var in struct{ ID json.RawMessage }
			json.Unmarshal(body, &in)
			reply := fmt.Sprintf(`{"jsonrpc":"2.0","id":%s,"result":{"text":"reply %d"}}`, in.ID, i)
			fmt.Fprintf(conn, "HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(reply), reply)
		}
	}()
	c := newClientWith(t, ln.Addr().String(), ClientOptions{HTTP1: true})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := 1; i <= 3; i++ {
		var got echoParams
		if err := c.Call(ctx, "echo", echoParams{Text: "x"}, &got); err != nil || got.Text != fmt.Sprintf("reply %d", i) {
			t.Fatalf("call %d: %+v, %v", i, got, err)
		}
	}
}
