package pgwire_test

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tpcd/tpcd/internal/pgtest"
	"github.com/tpcd/tpcd/internal/testbin"
)

// psqlTerminal is psql run interactively on a pseudo-terminal, as a person
// uses it: its prompt shows the transaction status the front door reports
// in ReadyForQuery (=> idle, =*> in a block, =!> in a failed block).
type psqlTerminal struct {
	*testbin.Terminal
	t   *testing.T
	out testbin.SyncBuffer
}

func startPsqlTerminal(t *testing.T, f *frontDoor) *psqlTerminal {
	t.Helper()
	cmd := exec.Command(pgtest.ClientBin(t, "psql"), f.psqlURL(), "-X", "-P", "pager=off")
	cmd.Env = append(os.Environ(), append(f.psqlEnv(testPassword), "TERM=dumb")...)
	pt := &psqlTerminal{t: t}
	pt.Terminal = testbin.StartTerminal(t, cmd, 200, &pt.out)
	return pt
}

// typeLine types a line and presses Enter.
func (pt *psqlTerminal) typeLine(line string) {
	pt.t.Helper()
	pt.Type(pt.t, line+"\r")
}

// waitCount waits until psql has shown s at least n times.
func (pt *psqlTerminal) waitCount(s string, n int) {
	pt.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		out := pt.out.String()
		if strings.Count(out, s) >= n {
			return
		}
		if time.Now().After(deadline) {
			pt.t.Fatalf("psql never showed %q %d times; it showed:\n%s", s, n, out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPsqlTerminal: psql on a terminal commits a block across both
// participants, shows a failed block's status and rolls it back on COMMIT,
// and, killed inside a block, leaves nothing behind.
func TestPsqlTerminal(t *testing.T) {
	f := startFrontDoor(t, nil)
	k0, k1 := keysOn(0, 6, 0)[5], keysOn(1, 6, 0)[5]
	kFailed, kLeft := keysOn(0, 7, 0)[6], keysOn(1, 7, 0)[6]
	pt := startPsqlTerminal(t, f)
	const idle, inBlock, failed = "tpcd=> ", "tpcd=*> ", "tpcd=!> "
	pt.waitCount(idle, 1)

	pt.typeLine("BEGIN;")
	pt.waitCount(inBlock, 1)
	pt.typeLine(fmt.Sprintf("INSERT INTO kv (k, v) VALUES (%d, 'psql terminal');", k0))
	pt.waitCount(inBlock, 2)
	pt.typeLine(fmt.Sprintf("INSERT INTO kv (k, v) VALUES (%d, 'psql terminal');", k1))
	pt.waitCount(inBlock, 3)
	pt.typeLine("COMMIT;")
	pt.waitCount("COMMIT", 2) // the typed line, and the tag
	pt.waitCount(idle, 2)

	pt.typeLine("BEGIN;")
	pt.waitCount(inBlock, 4)
	pt.typeLine(fmt.Sprintf("INSERT INTO kv (k, v) VALUES (%d, 'not kept');", kFailed))
	pt.waitCount(inBlock, 5)
	pt.typeLine(fmt.Sprintf("INSERT INTO kv (k, v) VALUES (%d, 'duplicate');", k1))
	pt.waitCount("duplicate key value violates unique constraint", 1)
	pt.waitCount(failed, 1)
	pt.typeLine("COMMIT;")
	pt.waitCount("ROLLBACK", 1)
	pt.waitCount(idle, 3)

	pt.typeLine("BEGIN;")
	pt.waitCount(inBlock, 6)
	pt.typeLine(fmt.Sprintf("INSERT INTO kv (k, v) VALUES (%d, 'left behind?');", kLeft))
	pt.waitCount("INSERT 0 1", 3)
	pt.Cmd.Process.Signal(syscall.SIGKILL)
	pt.Cmd.Wait()

	f.nothingLeft()
	f.wantRows(map[int]string{k0: "psql terminal", k1: "psql terminal"})
}
