package embedpg

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// helperEnv makes the test binary, started again by TestRemoveStale, start a
// temporary cluster, print its directory and die by SIGKILL, as a run of
// tpcd does when it is killed or its terminal closes under it.
const helperEnv = "EMBEDPG_TEST_DIE_HOLDING_A_CLUSTER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		c, err := Start(ctx, Options{Settings: fast})
		if err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(2)
		}
		os.Stdout.WriteString(c.tmp.root + "\n")
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
	os.Exit(m.Run())
}

// dieHoldingACluster runs the helper process and returns the directory its
// cluster was left in.
func dieHoldingACluster(t *testing.T) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	err = cmd.Wait()
	if st, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !st.Signaled() || st.Signal() != syscall.SIGKILL {
		t.Fatalf("helper ended with %v, want death by SIGKILL", err)
	}
	dir := strings.TrimSpace(line)
	if dir == "" {
		t.Fatal("helper printed no directory")
	}
	return dir
}

func TestRemoveStale(t *testing.T) {
	base := emptyTempDir(t)
	dead := dieHoldingACluster(t)
	if !exists(t, filepath.Join(dead, tempDataName, "PG_VERSION")) {
		t.Fatalf("the dead run left no cluster in %s", dead)
	}
	// A directory without an owner lock was made by something else.
	foreign := filepath.Join(base, tempPattern+"foreign")
	if err := os.Mkdir(foreign, 0o700); err != nil {
		t.Fatal(err)
	}

	// A live cluster's start sweeps; its own directory and the foreign
	// one stay, the dead run's goes with its server processes.
	live := start(t, Options{})
	if exists(t, dead) {
		t.Errorf("%s of a dead process is still there after the next start", dead)
	}
	if procs := clusterProcs(filepath.Join(dead, tempDataName)); len(procs) != 0 {
		t.Errorf("server processes %v of the dead run still run", procs)
	}
	if !exists(t, foreign) {
		t.Errorf("%s without an owner lock was removed", foreign)
	}

	// Another start keeps the live cluster.
	removed, err := RemoveStale(nil)
	if err != nil || len(removed) != 0 {
		t.Errorf("RemoveStale with only a live cluster and a foreign dir = %v, %v", removed, err)
	}
	if !exists(t, filepath.Join(live.Dir(), "PG_VERSION")) {
		t.Errorf("the live cluster's directory %s was removed", live.Dir())
	}
	if err := live.Stop(); err != nil {
		t.Fatal(err)
	}
	if exists(t, live.tmp.root) {
		t.Errorf("Stop left %s", live.tmp.root)
	}
}

// A server on its unix socket alone has no TCP port to lose: it restarts
// after a kill whatever other programs bound meanwhile.
func TestUnixSocketOnly(t *testing.T) {
	t.Parallel()
	c := start(t, Options{UnixSocketOnly: true})
	if !strings.Contains(c.URI("postgres"), "host=") || strings.Contains(c.URI("postgres"), "127.0.0.1") {
		t.Errorf("URI %s does not name the socket", c.URI("postgres"))
	}
	admin := connect(t, c.URI("postgres"))
	if got := queryOne[string](t, admin, "SHOW listen_addresses"); got != "" {
		t.Errorf("listen_addresses = %q, want none", got)
	}
	mustExec(t, admin, "CREATE TABLE kept (k int)")
	mustExec(t, admin, "INSERT INTO kept VALUES (1)")
	if err := c.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := c.Restart(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if n := queryOne[int](t, connect(t, c.URI("postgres")), "SELECT count(*) FROM kept"); n != 1 {
		t.Errorf("%d rows after the restart, want 1", n)
	}
}
