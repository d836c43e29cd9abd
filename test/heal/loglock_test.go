package heal

import (
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tpcd/tpcd/db/embedpg"
)

// TestSecondCoordinatorOnALogRefuses: a coordinator without --lease holds
// its log database's lock while it runs. A second one started on the same
// log waits for it, then refuses to serve and names the holder; a standby
// with --lease waits and does not take over; once the first is killed, a
// coordinator started on the log serves.
func TestSecondCoordinatorOnALogRefuses(t *testing.T) {
	t.Parallel()
	root := stateRoot(t)
	logServer := startServer(t, filepath.Join(root, "log"), "tpcd_log")
	logURI := fmt.Sprintf("postgres://%s@127.0.0.1:%d/tpcd_log?sslmode=disable&connect_timeout=2", embedpg.Superuser, logServer.Port())
	// Participants that never answer: the coordinators serve clients
	// (ping) without them.
	nowhere := freeAddr(t)
	coordinator := func(name string, args ...string) *node {
		n := newNode(t, root, name, append([]string{"coordinator", "--participant", nowhere, "--log-db", logURI}, args...)...)
		return n
	}

	first := coordinator("c1")
	first.start(t)
	first.waitServing(t, 2*time.Minute)

	standby := standbyNode(t, root, "standby")
	standby.args = append([]string{"coordinator", "--participant", nowhere, "--log-db", logURI, "--lease", "1s"}, standby.args...)
	standby.startUnheld(t)
	waitOutput(t, standby, "a coordinator without --lease serves on this log")

	second := coordinator("c2")
	second.start(t)
	waitOutput(t, second, "another coordinator holds this log's lock; waiting for it to stop")
	st, out := second.waitExit(t, time.Minute)
	if st.Success() || !strings.Contains(out, "another coordinator serves on this log database") || !strings.Contains(out, "tpcd coordinator (log lock)") {
		t.Fatalf("the second coordinator on the log: %v, want a refusal naming the first's session:\n%s", st, out)
	}
	if strings.Contains(standby.proc.Out.String(), "holding the coordinator's slot") {
		t.Fatalf("the standby took the slot while a coordinator without a lease served:\n%s", standby.proc.Out)
	}
	// Stopped, not killed: a standby killed while it looks at the slot
	// could leave it held for a lease's length.
	standby.proc.Cmd.Process.Signal(syscall.SIGTERM)
	standby.waitExit(t, time.Minute)

	// Killed, the first's session ends with it: the next one on the log
	// takes the lock and serves.
	first.proc.Cmd.Process.Kill()
	<-first.proc.Exited()
	second.start(t)
	second.waitServing(t, 2*time.Minute)
}
