package rpc

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/tpcd/tpcd/internal/testbin"
)

// mutedAddr returns a loopback address that takes connections and never
// answers on them.
func mutedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	held := make(chan []net.Conn, 1)
	held <- nil
	t.Cleanup(func() {
		ln.Close()
		for _, c := range <-held {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held <- append(<-held, c)
		}
	}()
	return ln.Addr().String()
}

// TestFailoverMovesOnOnlyWhenNotConnected: a call goes past an address
// that refuses connections, in every client mode, and stays on the one
// that answered; a server's error answer does not move it on.
func TestFailoverMovesOnOnlyWhenNotConnected(t *testing.T) {
	m := newTestMethods()
	for _, mode := range []struct {
		name string
		opts ClientOptions
	}{{"http2", ClientOptions{}}, {"http1", ClientOptions{HTTP1: true}}, {"stream", ClientOptions{Stream: true}}} {
		t.Run(mode.name, func(t *testing.T) {
			ctx := context.Background()
			_, ln := startServer(t, "", ServerOptions{Methods: m.methods()})
			down, up := testbin.RefusingAddr(t), ln.Addr().String()

			alone := NewFailover([]string{down}, mode.opts)
			defer alone.Close()
			if err := alone.Call(ctx, "nothing", nil, nil); !NotConnected(err) {
				t.Fatalf("call with no server up: %v, want a failure to connect", err)
			}

			f := NewFailover([]string{down, up}, mode.opts)
			defer f.Close()
			var got echoParams
			if err := f.Call(ctx, "echo", echoParams{Text: "a"}, &got); err != nil || got.Text != "a" {
				t.Fatalf("echo past a refusing address: %+v, %v", got, err)
			}
			if f.Addr() != up {
				t.Fatalf("calls go to %s after %s answered", f.Addr(), up)
			}
			batch := []BatchCall{{Method: "echo", Params: echoParams{Text: "b"}, Result: &got}, {Method: "plainerr"}}
			if err := f.CallBatch(ctx, batch); err != nil || batch[0].Err != nil || got.Text != "b" || batch[1].Err == nil || NotConnected(batch[1].Err) {
				t.Fatalf("batch: %v, calls %v / %v, echo %+v", err, batch[0].Err, batch[1].Err, got)
			}
			if err := f.Call(ctx, "plainerr", nil, nil); err == nil || NotConnected(err) || f.Addr() != up {
				t.Fatalf("an error answer: %v, calls now go to %s", err, f.Addr())
			}

			// A server that takes connections and never answers fails the
			// call; the next one goes on to the next address.
			mute := mutedAddr(t)
			g := NewFailover([]string{mute, up}, mode.opts)
			defer g.Close()
			short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
			defer cancel()
			if err := g.Call(short, "nothing", nil, nil); err == nil || NotConnected(err) {
				t.Fatalf("call to a mute server: %v, want it to fail after connecting", err)
			}
			if err := g.Call(ctx, "echo", echoParams{Text: "c"}, &got); err != nil || got.Text != "c" || g.Addr() != up {
				t.Fatalf("call after a mute server: %+v, %v, at %s", got, err, g.Addr())
			}
		})
	}
}

// TestFailoverPrefer: Prefer moves calls to an address of the list, and
// adds one it was not given, from which calls move on to the others once
// it refuses connections.
func TestFailoverPrefer(t *testing.T) {
	ctx := context.Background()
	m := newTestMethods()
	_, ln1 := startServer(t, "", ServerOptions{Methods: m.methods()})
	srv2, ln2 := startServer(t, "", ServerOptions{Methods: m.methods()})
	one, two := ln1.Addr().String(), ln2.Addr().String()
	f := NewFailover([]string{testbin.RefusingAddr(t), one}, ClientOptions{Stream: true})
	defer f.Close()
	var got echoParams
	if err := f.Call(ctx, "echo", echoParams{Text: "a"}, &got); err != nil || f.Addr() != one {
		t.Fatalf("first call: %v, at %s", err, f.Addr())
	}
	f.Prefer(two)
	if err := f.Call(ctx, "echo", echoParams{Text: "b"}, &got); err != nil || got.Text != "b" || f.Addr() != two {
		t.Fatalf("call after Prefer(%s): %+v, %v, at %s", two, got, err, f.Addr())
	}
	f.Prefer(one)
	if f.Addr() != one {
		t.Fatalf("Prefer(%s) of a given address: calls go to %s", one, f.Addr())
	}
	f.Prefer(two)
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := srv2.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := f.Call(ctx, "echo", echoParams{Text: "c"}, &got)
		if err == nil && f.Addr() == one {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("calls after the preferred address stopped: %v, at %s; want them back at %s", err, f.Addr(), one)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for i := range maxPreferred + 2 {
		f.Prefer(testbin.RefusingAddr(t) + strconv.Itoa(i))
	}
	if n := len(*f.clients.Load()); n != 3+maxPreferred-1 {
		t.Fatalf("%d addresses after many preferred; want the given 2 and %d added", n, maxPreferred)
	}
}
