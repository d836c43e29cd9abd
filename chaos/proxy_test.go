package chaos

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/tpcd/tpcd/internal/testbin"
)

// echoServer echoes every connection until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln := testbin.Listen(t)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func newTestLink(t *testing.T) *Link {
	t.Helper()
	l, err := NewLink("test", "127.0.0.1:0", echoServer(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func dial(t *testing.T, l *Link) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip sends msg and reads it back, failing the test on any error.
func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read: %v", err)
	}
	if string(got) != msg {
		t.Fatalf("echo %q, want %q", got, msg)
	}
}

// readClosed waits for the connection to be closed by the link.
func readClosed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, err := io.ReadAll(c)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("connection still open")
	}
}

// nothingFor checks that nothing arrives while a fault holds the data back.
func nothingFor(t *testing.T, c net.Conn, d time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	n, err := c.Read(make([]byte, 1))
	if n > 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read %d bytes, err %v; want nothing", n, err)
	}
}

func TestLinkForwardsLargeData(t *testing.T) {
	l := newTestLink(t)
	c := dial(t, l)
	msg := string(bytes.Repeat([]byte("0123456789abcdef"), 64<<10)) // 1 MiB: many chunks
	done := make(chan error, 1)
	go func() { _, err := c.Write([]byte(msg)); done <- err }()
	got := make([]byte, len(msg))
	c.SetReadDeadline(time.Now().Add(time.Minute))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if string(got) != msg {
		t.Fatal("data changed on the way")
	}
}

func TestLinkCut(t *testing.T) {
	l := newTestLink(t)
	c := dial(t, l)
	roundTrip(t, c, "hello")
	if n := l.Cut(); n != 1 {
		t.Fatalf("cut %d connections, want 1", n)
	}
	readClosed(t, c)
	roundTrip(t, dial(t, l), "again") // a new connection works
}

func TestLinkDownRefusesUntilHealed(t *testing.T) {
	l := newTestLink(t)
	c := dial(t, l)
	roundTrip(t, c, "hello")
	l.Down()
	readClosed(t, c)
	readClosed(t, dial(t, l))
	l.Heal()
	roundTrip(t, dial(t, l), "back")
}

// writeUnderFault opens a connection through l that works, puts l under
// fault, and writes msg, which then must not come back for a while.
func writeUnderFault(t *testing.T, l *Link, fault func(), msg string) net.Conn {
	t.Helper()
	c := dial(t, l)
	roundTrip(t, c, "hello")
	fault()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	nothingFor(t, c, 200*time.Millisecond)
	return c
}

func TestLinkStallDeliversOnHeal(t *testing.T) {
	l := newTestLink(t)
	c := writeUnderFault(t, l, l.Stall, "late")
	l.Heal()
	got := make([]byte, 4)
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "late" {
		t.Fatalf("after heal read %q, %v", got, err)
	}
}

func TestLinkBlackholeDiscardsThenCuts(t *testing.T) {
	l := newTestLink(t)
	c := writeUnderFault(t, l, l.Blackhole, "lost")
	l.Heal()
	readClosed(t, c)
	roundTrip(t, dial(t, l), "fresh")
}

func TestLinkDelayKeepsOrder(t *testing.T) {
	l := newTestLink(t)
	c := dial(t, l)
	l.Delay(20 * time.Millisecond)
	for _, m := range []string{"a", "bb", "ccc"} {
		roundTrip(t, c, m)
	}
	l.Heal()
	roundTrip(t, c, "dddd")
}
