package rpc

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"
)

// benchClient serves the test methods on loopback and returns a client of
// them; both end with the benchmark.
func benchClient(b *testing.B, opts ClientOptions) *Client {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := NewServer(ServerOptions{Methods: newTestMethods().methods(), Logger: quiet})
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Shutdown(context.Background()) })
	opts.Logger = quiet
	c := NewClient(ln.Addr().String(), opts)
	b.Cleanup(func() { c.Close() })
	return c
}

// benchTransports are the ways a Client can send a call.
var benchTransports = []struct {
	name string
	opts ClientOptions
}{
	{"h2c", ClientOptions{}},
	{"http1", ClientOptions{HTTP1: true}},
	{"stream", ClientOptions{Stream: true}},
	{"mux", ClientOptions{Stream: true, Multiplex: 1}},
}

// reportCPU adds the CPU time per operation since start as "cpu-ns/op":
// ns/op of a sequential call is wall time, which also counts the waits
// between the two ends.
func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
}

var benchParams = echoParams{Text: "insert into t values ($1, $2)", Count: 3}

// BenchmarkCall is one sequential call over loopback, the cost every hop of a
// statement pays: run with -bench 'Call$' to see it per transport.
func BenchmarkCall(b *testing.B) {
	for _, tc := range benchTransports {
		b.Run(tc.name, func(b *testing.B) {
			c := benchClient(b, tc.opts)
			ctx := context.Background()
			var out echoParams
			b.ReportAllocs()
			b.ResetTimer()
			start := cpuTime()
			for b.Loop() {
				if err := c.Call(ctx, "echo", benchParams, &out); err != nil {
					b.Fatal(err)
				}
			}
			reportCPU(b, start)
		})
	}
}

// BenchmarkCallParallel is calls from 8 goroutines per CPU at once, as a
// coordinator under load gets them: h2c shares one connection among them,
// and mux one stream; the others open a connection (or stream) per call in
// flight.
func BenchmarkCallParallel(b *testing.B) {
	for _, tc := range benchTransports {
		b.Run(tc.name, func(b *testing.B) {
			c := benchClient(b, tc.opts)
			b.ReportAllocs()
			b.SetParallelism(8)
			b.ResetTimer()
			start := cpuTime()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				var out echoParams
				for pb.Next() {
					if err := c.Call(ctx, "echo", benchParams, &out); err != nil {
						b.Error(err)
						return
					}
				}
			})
			reportCPU(b, start)
		})
	}
}

// BenchmarkCallBatch is one batch of one or eight messages the size of a
// node's exec requests, as an outbox sends them when idle and under load.
func BenchmarkCallBatch(b *testing.B) {
	for _, size := range []int{1, 8} {
		for _, tc := range benchTransports {
			b.Run(fmt.Sprintf("%s/%d", tc.name, size), func(b *testing.B) {
				c := benchClient(b, tc.opts)
				ctx := context.Background()
				in := echoParams{Text: "INSERT INTO bench_kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v -- 1370000000000001, 1370000000000001", Count: 3}
				out := make([]echoParams, size)
				calls := make([]BatchCall, size)
				b.ReportAllocs()
				b.ResetTimer()
				start := cpuTime()
				for b.Loop() {
					for i := range calls {
						calls[i] = BatchCall{Method: "echo", Params: in, Result: &out[i]}
					}
					if err := c.CallBatch(ctx, calls); err != nil {
						b.Fatal(err)
					}
				}
				reportCPU(b, start)
			})
		}
	}
}
