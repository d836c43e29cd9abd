package bench

import (
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// A transaction's CPU is spread over the client, the tpcd nodes and the
// PostgreSQL servers, and the servers do more of it than the Go processes
// (docs/PERFORMANCE.md). getrusage sees only this process, so the figure
// of all processes reads every involved process's times from /proc
// instead: at the start and at the end of a measurement, the difference
// is what they spent in between. Which processes count, procscope.go
// decides.

// procKind is what a counted process is.
type procKind uint8

const (
	procPostgres procKind = 1 + iota
	procTPCD
)

// kindOfCommand tells the processes that may take part in a commit by
// their command name (the executable's base name, /proc/PID/comm):
// PostgreSQL's postmasters and every process they fork (backends, the WAL
// writer, the checkpointer...) keep the name of the postgres binary, and
// tpcd nodes run as tpcd. Which of them count, procScope says.
func kindOfCommand(comm string) (procKind, bool) {
	switch comm {
	case "postgres", "postmaster":
		return procPostgres, true
	case "tpcd":
		return procTPCD, true
	}
	return 0, false
}

// procTimes is one process's line of /proc/PID/stat, as far as CPU
// accounting needs it; times are in clock ticks.
type procTimes struct {
	kind procKind
	ppid int
	// started tells a process from a later one that got the same pid.
	started uint64
	// own is utime + stime, every thread of the process.
	own uint64
	// reaped is cutime + cstime: the whole CPU time of children that
	// exited and that this process waited for. A postmaster waits for its
	// backends, so a backend that ends during a measurement still counts.
	reaped uint64
	// switches are the context switches of the process's threads,
	// voluntary (it waited: for a message, a lock, the disk) and not
	// (preempted); read for counted processes only (threadSwitches).
	switches uint64
}

func (p procTimes) total() uint64 { return p.own + p.reaped }

// procSnapshot is every counted process at one moment, by pid.
type procSnapshot map[int]procTimes

// parseProcStat reads the command name, parent, start time and CPU times
// from a /proc/PID/stat line (proc(5)).
func parseProcStat(line string) (string, procTimes, error) {
	// The command name is in parentheses and may contain anything,
	// parentheses and spaces included: it ends at the last ')'.
	open, end := strings.IndexByte(line, '('), strings.LastIndexByte(line, ')')
	if open < 0 || end < open {
		return "", procTimes{}, fmt.Errorf("no command name in %q", line)
	}
	comm := line[open+1 : end]
	// f[0] is field 3 of proc(5), the state.
	f := strings.Fields(line[end+1:])
	const (
		ppid, utime, stime, cutime, cstime, starttime = 4, 14, 15, 16, 17, 22
		first                                         = 3
	)
	if len(f) <= starttime-first {
		return "", procTimes{}, fmt.Errorf("short stat line %q", line)
	}
	num := func(field int) uint64 {
		v, err := strconv.ParseInt(f[field-first], 10, 64)
		if err != nil || v < 0 {
			return 0
		}
		return uint64(v)
	}
	return comm, procTimes{
		ppid:    int(num(ppid)),
		started: num(starttime),
		own:     num(utime) + num(stime),
		reaped:  num(cutime) + num(cstime),
	}, nil
}

// threadSwitches sums the context switches of every thread of process
// pid (/proc/PID/task/TID/status, whose counts are the thread's own); 0
// when they cannot be read.
func threadSwitches(pid int) uint64 {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	var n uint64
	for _, t := range tasks {
		b, err := os.ReadFile(dir + "/" + t.Name() + "/status")
		if err != nil {
			continue
		}
		n += contextSwitches(string(b))
	}
	return n
}

// contextSwitches reads voluntary_ctxt_switches and
// nonvoluntary_ctxt_switches from a /proc status file and adds them.
func contextSwitches(status string) uint64 {
	var n uint64
	for _, line := range strings.Split(status, "\n") {
		name, value, ok := strings.Cut(line, ":")
		if !ok || name != "voluntary_ctxt_switches" && name != "nonvoluntary_ctxt_switches" {
			continue
		}
		if v, err := strconv.ParseUint(strings.TrimSpace(value), 10, 64); err == nil {
			n += v
		}
	}
	return n
}

// procCPU is what the counted processes spent between two snapshots.
type procCPU struct {
	// switches are the context switches of the processes seen in both
	// snapshots, and all of those of one that started in between; a
	// process that ended in between is not in it.
	switches       uint64
	postgres, tpcd time.Duration
	// postgresProcs and tpcdProcs count the processes seen in either
	// snapshot.
	postgresProcs, tpcdProcs int
}

// cpuBetween computes what the processes of before and after spent in
// between:
//   - a process in both: the growth of its own and its reaped children's
//     times;
//   - a process only in after started meanwhile: all of its times;
//   - a process only in before ended meanwhile. If its parent is counted
//     and still there, the parent's reaped times grew by the child's whole
//     life, of which the part before the first snapshot is taken off
//     again. Otherwise what it spent in the window is lost: nothing
//     counted ever sees it.
func cpuBetween(before, after procSnapshot, ticksPerSecond uint64) procCPU {
	var ticks [procTPCD + 1]int64
	var procs [procTPCD + 1]int
	same := func(a procTimes, pid int) (procTimes, bool) {
		b, ok := after[pid]
		return b, ok && b.started == a.started
	}
	var switches uint64
	for pid, a := range after {
		procs[a.kind]++
		if b, ok := before[pid]; ok && b.started == a.started {
			ticks[a.kind] += int64(a.total()) - int64(b.total())
			switches += a.switches - min(b.switches, a.switches)
			continue
		}
		ticks[a.kind] += int64(a.total())
		switches += a.switches
	}
	for pid, b := range before {
		if _, ok := same(b, pid); ok {
			continue
		}
		procs[b.kind]++
		parentBefore, known := before[b.ppid]
		if !known {
			continue
		}
		if parent, ok := same(parentBefore, b.ppid); ok {
			ticks[parent.kind] -= int64(b.total())
		}
	}
	duration := func(t int64) time.Duration {
		return time.Duration(max(t, 0)) * time.Second / time.Duration(ticksPerSecond)
	}
	return procCPU{
		switches:      switches,
		postgres:      duration(ticks[procPostgres]),
		tpcd:          duration(ticks[procTPCD]),
		postgresProcs: procs[procPostgres],
		tpcdProcs:     procs[procTPCD],
	}
}

// clockTicks is how many clock ticks of /proc's times make a second, as
// the kernel tells every program in its auxiliary vector.
var clockTicks = sync.OnceValue(func() uint64 {
	if b, err := os.ReadFile("/proc/self/auxv"); err == nil {
		if v, ok := auxvValue(b, atClkTck); ok && v > 0 {
			return v
		}
	}
	return 100 // USER_HZ on every Linux architecture Go runs on
})

// atClkTck is the auxiliary vector's entry for the clock ticks per second,
// where the C library's sysconf(_SC_CLK_TCK) finds them.
const atClkTck = 17

// auxvValue finds key in an auxiliary vector (/proc/self/auxv): pairs of
// native machine words, ended by a zero key.
func auxvValue(auxv []byte, key uint64) (uint64, bool) {
	word := strconv.IntSize / 8
	read := func(b []byte) uint64 {
		if word == 4 {
			return uint64(binary.NativeEndian.Uint32(b))
		}
		return binary.NativeEndian.Uint64(b)
	}
	for i := 0; i+2*word <= len(auxv); i += 2 * word {
		k := read(auxv[i:])
		if k == 0 {
			break
		}
		if k == key {
			return read(auxv[i+word:]), true
		}
	}
	return 0, false
}
