package chaos

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tpcd/tpcd/activation"
)

// proc supervises one tpcd node process: it starts it, starts it again
// whenever it exits (unless a fault holds it down), and can kill, pause or
// stop it. Its output is appended to one log file across restarts.
type proc struct {
	name    string
	bin     string
	args    []string
	env     []string
	logPath string
	log     *slog.Logger
	// socket is the node's listening socket, passed to every start
	// (activation.Command).
	socket *os.File

	mu         sync.Mutex
	cmd        *exec.Cmd
	exited     chan struct{} // closed when the current process has exited
	hold       bool          // a fault keeps the node down
	deliberate bool          // the current process is being killed by us
	paused     bool
	stopped    bool
	wake       chan struct{}
	starts     int
	unexpected int
	lastExit   string

	done chan struct{} // closed when the supervisor returns
}

// restartBackoff is the pause before starting a node again after it exited
// on its own (typically: its PostgreSQL was down when it started).
const restartBackoff = 300 * time.Millisecond

func newProc(name, bin string, args []string, logPath string, log *slog.Logger, socket *os.File) *proc {
	return &proc{
		name: name, bin: bin, args: args, env: childEnv(), logPath: logPath, log: log, socket: socket,
		wake: make(chan struct{}, 1), done: make(chan struct{}),
	}
}

// childEnv is the harness's environment without TPCD_* variables, which
// kong would read as flags (and TPCD_FAILPOINTS would arm crash points).
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TPCD_") {
			env = append(env, kv)
		}
	}
	return env
}

// supervise runs until stop.
func (p *proc) supervise() {
	defer close(p.done)
	for {
		p.mu.Lock()
		for p.hold && !p.stopped {
			p.mu.Unlock()
			<-p.wake
			p.mu.Lock()
		}
		if p.stopped {
			p.mu.Unlock()
			return
		}
		cmd, exited, err := p.start()
		if err != nil {
			p.mu.Unlock()
			p.log.Error("cannot start node", "node", p.name, "err", err)
			p.sleep(time.Second)
			continue
		}
		p.mu.Unlock()

		werr := cmd.Wait()
		p.mu.Lock()
		p.cmd = nil
		close(exited)
		wanted := p.deliberate || p.stopped
		p.deliberate = false
		p.paused = false
		if !wanted {
			p.unexpected++
			p.lastExit = fmt.Sprint(werr)
		}
		p.mu.Unlock()
		if !wanted {
			p.log.Warn("node exited on its own; restarting", "node", p.name, "status", fmt.Sprint(werr))
			p.sleep(restartBackoff)
		}
	}
}

// start launches the process; p.mu is held.
func (p *proc) start() (*exec.Cmd, chan struct{}, error) {
	f, err := os.OpenFile(p.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("open node log: %w", err)
	}
	defer f.Close()
	p.starts++
	fmt.Fprintf(f, "=== chaos: start #%d of %s at %s ===\n", p.starts, p.name, time.Now().Format(time.RFC3339Nano))
	cmd := activation.Command(p.bin, []*os.File{p.socket}, p.args...)
	cmd.Env = p.env
	cmd.Stdout, cmd.Stderr = f, f
	// Own process group: a Ctrl-C at the terminal is for the harness,
	// which stops the nodes itself. Pdeathsig: a harness that dies takes
	// its nodes along instead of leaving them running.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("start %s: %w", p.bin, err)
	}
	p.cmd = cmd
	p.exited = make(chan struct{})
	return cmd, p.exited, nil
}

func (p *proc) sleep(d time.Duration) {
	select {
	case <-time.After(d):
	case <-p.wake:
		// Re-arm: stop or release may be waiting to be noticed.
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
}

func (p *proc) nudge() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Kill SIGKILLs the node and keeps it down until Release. It reports
// whether a process was running.
func (p *proc) Kill() bool {
	p.mu.Lock()
	p.hold = true
	cmd, exited := p.cmd, p.exited
	if cmd != nil {
		p.deliberate = true
	}
	p.mu.Unlock()
	if cmd == nil {
		return false
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-exited
	return true
}

// Release lets the supervisor start the node again.
func (p *proc) Release() {
	p.mu.Lock()
	p.hold = false
	p.mu.Unlock()
	p.nudge()
}

// Pause stops the process (SIGSTOP) as a long GC pause or a frozen VM
// would: its sockets stay open but nothing is answered.
func (p *proc) Pause() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		return false
	}
	p.paused = true
	return true
}

// Resume continues a paused process.
func (p *proc) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && p.paused {
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
	}
	p.paused = false
}

// Stop ends supervision: SIGTERM (a clean shutdown), SIGKILL after grace.
func (p *proc) Stop(grace time.Duration) error {
	p.mu.Lock()
	p.stopped = true
	cmd, exited := p.cmd, p.exited
	if cmd != nil && p.paused {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		p.paused = false
	}
	p.mu.Unlock()
	p.nudge()
	var err error
	if cmd != nil {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(grace):
			err = fmt.Errorf("%s did not stop within %v after SIGTERM; killed", p.name, grace)
			_ = cmd.Process.Signal(syscall.SIGKILL)
			<-exited
		}
	}
	<-p.done
	return err
}

// Stats reports how often the node was started and how often it exited
// without the harness asking.
func (p *proc) Stats() (starts, unexpected int, lastExit string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.starts, p.unexpected, p.lastExit
}
