package rpc

import (
	"context"
	"errors"
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
