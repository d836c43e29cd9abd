//go:build unix

package rpc

import (
	"syscall"
	"time"
)

// cpuTime is the CPU time the process has used, user and system: the
// client's and the server's work for a call, as both run here.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
