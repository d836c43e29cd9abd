package testbin

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// TestLendAcrossRestart stops a node's view of a held port and lends it
// again, as a test restarting an in-process node does: the stopped node's
// Accept ends, a client that connects while no node serves is queued, not
// refused, and the next node accepts it.
func TestLendAcrossRestart(t *testing.T) {
	p := HoldPort(t)
	first := p.Lend()
	accepted := make(chan error, 1)
	go func() {
		_, err := first.Accept()
		accepted <- err
	}()
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-accepted:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Accept still waits a minute after Close")
	}

	c, err := net.DialTimeout("tcp", p.Addr, time.Minute)
	if err != nil {
		t.Fatalf("dial while no node serves: %v", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}

	second := p.Lend()
	defer second.Close()
	if second.Addr().String() != p.Addr {
		t.Errorf("lent listener on %s, want %s", second.Addr(), p.Addr)
	}
	s, err := second.Accept()
	if err != nil {
		t.Fatalf("the next node's Accept: %v", err)
	}
	defer s.Close()
	s.SetDeadline(time.Now().Add(time.Minute))
	b := make([]byte, 1)
	if _, err := io.ReadFull(s, b); err != nil || string(b) != "x" {
		t.Fatalf("read %q, %v; want the queued client's x", b, err)
	}
}

// TestRefusingAddr: a connection is refused, and nobody can listen there.
func TestRefusingAddr(t *testing.T) {
	addr := RefusingAddr(t)
	c, err := net.DialTimeout("tcp", addr, time.Minute)
	if err == nil {
		c.Close()
		t.Fatalf("dial %s connected", addr)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial %s: %v, want connection refused", addr, err)
	}
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		ln.Close()
		t.Fatalf("listened on %s", addr)
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("listen %s: %v, want address in use", addr, err)
	}
}
