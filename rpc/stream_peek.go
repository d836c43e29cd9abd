//go:build linux || darwin || dragonfly || freebsd || netbsd || openbsd

package rpc

import (
	"crypto/tls"
	"net"
	"syscall"
)

// peerClosed reports whether the server closed (or wrote to) a stream that
// sat idle, without waiting: a peek that finds the end of the stream, data
// nobody asked for, or an error. Go's HTTP transport learns the same from a
// goroutine reading every idle connection; one system call before each
// reuse is cheaper than that goroutine's hand-offs.
func peerClosed(conn net.Conn) bool {
	if tc, ok := conn.(*tls.Conn); ok {
		conn = tc.NetConn()
	}
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	closed := false
	var buf [1]byte
	err = raw.Read(func(fd uintptr) bool {
		// Anything but "nothing to read yet" means the stream is done
		// for: the end of it (0 bytes), bytes nobody asked for, an error.
		_, _, rerr := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		closed = rerr != syscall.EAGAIN && rerr != syscall.EWOULDBLOCK
		return true
	})
	return err != nil || closed
}
