package bench

import (
	"encoding/binary"
	"os"
	"strconv"
	"testing"
	"time"
)

func TestParseProcStat(t *testing.T) {
	// A command name may hold spaces and parentheses; the fields after it
	// are proc(5)'s from the state on.
	line := "4242 (a (b) c) S 17 4242 4242 0 -1 4194560 100 0 0 0 250 75 30 12 20 0 1 0 987654 1000 10 0 0 0\n"
	comm, p, err := parseProcStat(line)
	if err != nil {
		t.Fatal(err)
	}
	if comm != "a (b) c" || p.ppid != 17 || p.own != 325 || p.reaped != 42 || p.started != 987654 {
		t.Errorf("parsed %q %+v, want \"a (b) c\", parent 17, own 325, reaped 42, started 987654", comm, p)
	}
	if _, _, err := parseProcStat("4242 (x) S 1 2 3"); err == nil {
		t.Error("a short line parsed")
	}
}

// What the counted processes spent in a window: growth for those there
// throughout, everything for new ones, and a reaped child's window time
// through its parent without its time from before.
func TestCPUBetween(t *testing.T) {
	const hz = 100
	pg, tp := procPostgres, procTPCD
	before := procSnapshot{
		10: {kind: pg, ppid: 1, started: 5, own: 1000, reaped: 200, switches: 7}, // postmaster
		11: {kind: pg, ppid: 10, started: 6, own: 300, switches: 500},            // backend, ends in the window
		12: {kind: pg, ppid: 10, started: 7, own: 50, switches: 40},              // backend throughout
		20: {kind: tp, ppid: 1, started: 8, own: 400, switches: 1000},            // a node
		30: {kind: tp, ppid: 1, started: 9, own: 70},                             // ends, its parent is not counted
		40: {kind: pg, ppid: 1, started: 10, own: 999},                           // pid reused by a new process
	}
	after := procSnapshot{
		// The backend 11 ended with 340 ticks and was reaped: the
		// postmaster's reaped times grew by all 340 of them.
		10: {kind: pg, ppid: 1, started: 5, own: 1010, reaped: 540, switches: 9},
		12: {kind: pg, ppid: 10, started: 7, own: 80, switches: 140},
		13: {kind: pg, ppid: 10, started: 50, own: 25, switches: 30}, // new backend
		20: {kind: tp, ppid: 1, started: 8, own: 460, switches: 1600},
		40: {kind: tp, ppid: 1, started: 60, own: 5, switches: 4},
	}
	got := cpuBetween(before, after, hz)
	// postgres: 10 (postmaster) + 40 (backend 11 in the window) + 30 + 25.
	// tpcd: 60 + 5 (the new process on pid 40).
	// Switches: 2 + 100 + 30 + 600 + 4; the ended backend's are lost.
	want := procCPU{switches: 736, postgres: 105 * 10 * time.Millisecond, tpcd: 65 * 10 * time.Millisecond, postgresProcs: 5, tpcdProcs: 3}
	if got != want {
		t.Errorf("cpuBetween:\n got %+v\nwant %+v", got, want)
	}
}

func TestAuxvValue(t *testing.T) {
	word := strconv.IntSize / 8
	var auxv []byte
	put := func(vs ...uint64) {
		for _, v := range vs {
			b := make([]byte, word)
			if word == 4 {
				binary.NativeEndian.PutUint32(b, uint32(v))
			} else {
				binary.NativeEndian.PutUint64(b, v)
			}
			auxv = append(auxv, b...)
		}
	}
	put(6, 4096, atClkTck, 250, 0, 0, atClkTck, 1)
	if v, ok := auxvValue(auxv, atClkTck); !ok || v != 250 {
		t.Errorf("clock ticks %d, %v; want 250", v, ok)
	}
	if v, ok := auxvValue(auxv, 33); ok {
		t.Errorf("found %d for a key past the end of the vector", v)
	}
	if hz := clockTicks(); hz != 100 {
		t.Errorf("this machine's clock ticks: %d per second, want 100 (getconf CLK_TCK)", hz)
	}
}

// TestContextSwitches reads a status file's two counts, and a live
// process's threads: this test's process has waited, so it has some.
func TestContextSwitches(t *testing.T) {
	status := "Name:\ttpcd\nThreads:\t5\nvoluntary_ctxt_switches:\t120\nnonvoluntary_ctxt_switches:\t7\n"
	if n := contextSwitches(status); n != 127 {
		t.Errorf("switches of %q: %d, want 127", status, n)
	}
	time.Sleep(time.Millisecond)
	if n := threadSwitches(os.Getpid()); n == 0 {
		t.Error("this process's threads show no context switch")
	}
	if n := threadSwitches(-1); n != 0 {
		t.Errorf("a process that does not exist shows %d switches", n)
	}
}
