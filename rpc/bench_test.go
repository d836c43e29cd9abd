package rpc

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
)

// benchClient serves the test methods on loopback and returns a client of
// them; both end with the benchmark.
func benchClient(b *testing.B, http1 bool) *Client {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := NewServer(ServerOptions{Methods: newTestMethods().methods(), Logger: quiet})
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Shutdown(context.Background()) })
	c := NewClient(ln.Addr().String(), ClientOptions{Logger: quiet, HTTP1: http1})
	b.Cleanup(func() { c.Close() })
	return c
}

// BenchmarkCall is one sequential call over loopback, the cost every hop of a
// statement pays: run with -bench Call to see it per transport.
func BenchmarkCall(b *testing.B) {
	for _, tc := range []struct {
		name  string
		http1 bool
	}{{"h2c", false}, {"http1", true}} {
		b.Run(tc.name, func(b *testing.B) {
			c := benchClient(b, tc.http1)
			ctx := context.Background()
			in := echoParams{Text: "insert into t values ($1, $2)", Count: 3}
			var out echoParams
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if err := c.Call(ctx, "echo", in, &out); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCallBatch is one batch of eight messages the size of a node's
// exec requests, as an outbox under load sends them.
func BenchmarkCallBatch(b *testing.B) {
	c := benchClient(b, true)
	ctx := context.Background()
	in := echoParams{Text: "INSERT INTO bench_kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v -- 1370000000000001, 1370000000000001", Count: 3}
	out := make([]echoParams, 8)
	calls := make([]BatchCall, 8)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		for i := range calls {
			calls[i] = BatchCall{Method: "echo", Params: in, Result: &out[i]}
		}
		if err := c.CallBatch(ctx, calls); err != nil {
			b.Fatal(err)
		}
	}
}
