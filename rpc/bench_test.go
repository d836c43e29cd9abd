package rpc

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
)

// BenchmarkCall is one sequential call over loopback, the cost every hop of a
// statement pays: run with -bench Call to see it per transport.
func BenchmarkCall(b *testing.B) {
	for _, tc := range []struct {
		name  string
		http1 bool
	}{{"h2c", false}, {"http1", true}} {
		b.Run(tc.name, func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
			srv := NewServer(ServerOptions{Methods: newTestMethods().methods(), Logger: quiet})
			go srv.Serve(ln)
			defer srv.Shutdown(context.Background())
			c := NewClient(ln.Addr().String(), ClientOptions{Logger: quiet, HTTP1: tc.http1})
			defer c.Close()
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
