package testbin

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/creack/pty"
)

// Terminal is a program run on a pseudo-terminal, as a person runs it.
// What the program shows is copied to the writer StartTerminal was given,
// under the Terminal's lock: hold it (Lock) while reading that writer.
type Terminal struct {
	sync.Mutex
	Cmd  *exec.Cmd
	pty  *os.File
	done chan struct{}
}

// StartTerminal starts cmd on a pseudo-terminal of 40 rows and cols
// columns and copies what it shows to out until it exits. When the test
// ends the program is killed if it still runs, and the terminal closed.
func StartTerminal(t testing.TB, cmd *exec.Cmd, cols uint16, out io.Writer) *Terminal {
	t.Helper()
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 40, Cols: cols})
	if err != nil {
		t.Fatalf("start %s on a pseudo-terminal: %v", filepath.Base(cmd.Path), err)
	}
	tm := &Terminal{Cmd: cmd, pty: f, done: make(chan struct{})}
	go func() {
		defer close(tm.done)
		buf := make([]byte, 4096)
		for {
			n, err := f.Read(buf)
			tm.Lock()
			out.Write(buf[:n])
			tm.Unlock()
			if err != nil { // EIO once the program has exited
				return
			}
		}
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
		f.Close()
		<-tm.done
	})
	return tm
}

// Type sends keys to the program as typed on the terminal, failing the
// test if they cannot be.
func (tm *Terminal) Type(t testing.TB, keys string) {
	t.Helper()
	if _, err := tm.pty.Write([]byte(keys)); err != nil {
		t.Fatalf("type %q: %v", keys, err)
	}
}

// Done is closed once all the program showed has been copied, after it
// exited.
func (tm *Terminal) Done() <-chan struct{} { return tm.done }
