package bench

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// rssSampler follows the resident memory of processes while a measurement
// runs. Sampling every second misses short spikes; the kernel's own peak
// (VmHWM) covers those for this process, see selfPeakRSS.
type rssSampler struct {
	pids []int
	done chan struct{}
	wg   sync.WaitGroup

	mu   sync.Mutex
	peak map[int]int64 // KiB
}

func startRSSSampler(pids ...int) *rssSampler {
	s := &rssSampler{pids: pids, done: make(chan struct{}), peak: map[int]int64{}}
	s.sample()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-s.done:
				return
			case <-t.C:
				s.sample()
			}
		}
	}()
	return s
}

func (s *rssSampler) sample() {
	for _, pid := range s.pids {
		kb, err := procStatusKB(pid, "VmRSS")
		if err != nil {
			continue
		}
		s.mu.Lock()
		s.peak[pid] = max(s.peak[pid], kb)
		s.mu.Unlock()
	}
}

// stop ends sampling and returns the peak of each process in MiB (0 for one
// that could not be read).
func (s *rssSampler) stop() map[int]float64 {
	close(s.done)
	s.wg.Wait()
	s.sample()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[int]float64{}
	for pid, kb := range s.peak {
		out[pid] = float64(kb) / 1024
	}
	return out
}

// selfPeakRSS is this process's peak resident memory in MiB since it
// started, as the kernel tracked it.
func selfPeakRSS() float64 {
	kb, err := procStatusKB(os.Getpid(), "VmHWM")
	if err != nil {
		return 0
	}
	return float64(kb) / 1024
}

// procStatusKB reads one "kB" field of /proc/PID/status (Linux only).
func procStatusKB(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || name != field {
			continue
		}
		v := strings.TrimSuffix(strings.TrimSpace(rest), " kB")
		return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("/proc/%d/status has no %s", pid, field)
}

// loadAverage is the one-minute load average (Linux only; 0 elsewhere).
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f, _, _ := strings.Cut(string(b), " ")
	v, _ := strconv.ParseFloat(f, 64)
	return v
}
