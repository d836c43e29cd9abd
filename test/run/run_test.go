package run

import (
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tpcd/tpcd/internal/testbin"
)

func TestMain(m *testing.M) { os.Exit(testbin.Main(m, nil)) }

// startTimeout is generous: two initdb runs on a loaded 2-core machine.
const startTimeout = 4 * time.Minute

// clusterRun is one `tpcd cluster` process, in a process group of its own
// as a shell would start it, so that a signal can reach the whole group as
// a terminal's does.
type clusterRun struct {
	cmd  *exec.Cmd
	out  *testbin.SyncBuffer
	done chan struct{}
	err  error // Wait's result, once done is closed
}

// startCluster runs `tpcd cluster` with one participant on free ports, its
// temporary clusters in tmp and its working directory in dir.
func startCluster(t *testing.T, tmp, dir string) *clusterRun {
	t.Helper()
	r := &clusterRun{out: &testbin.SyncBuffer{}, done: make(chan struct{})}
	r.cmd = exec.Command(testbin.Binary(t), "cluster", "-n", "1", "--base-port", "0", "--metrics-addr", "127.0.0.1:0")
	r.cmd.Dir = dir
	r.cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	r.cmd.Stdout, r.cmd.Stderr = r.out, r.out
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		r.err = r.cmd.Wait()
		close(r.done)
	}()
	t.Cleanup(func() {
		syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
		<-r.done
		if t.Failed() {
			t.Logf("tpcd cluster:\n%s", r.out)
		}
	})
	return r
}

// waitStarted waits until the cluster says how to reach it.
func (r *clusterRun) waitStarted(t *testing.T) {
	t.Helper()
	deadline := time.After(startTimeout)
	for !strings.Contains(r.out.String(), "Press Ctrl-C to stop.") {
		select {
		case <-r.done:
			t.Fatalf("tpcd cluster exited while starting: %v", r.err)
		case <-deadline:
			t.Fatalf("tpcd cluster not started after %v", startTimeout)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// printed returns what follows label on the line of the output that
// starts with it.
func (r *clusterRun) printed(t *testing.T, label string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(label) + ` +(.+)$`).FindStringSubmatch(r.out.String())
	if m == nil {
		t.Fatalf("no line %q in the output", label)
	}
	return strings.TrimSpace(m[1])
}

// wait waits for the process to exit.
func (r *clusterRun) wait(t *testing.T) {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(3 * time.Minute):
		t.Fatalf("tpcd cluster still runs 3 minutes after the signal")
	}
}

// clusterDirs lists the embedded clusters' directories in tmp.
func clusterDirs(t *testing.T, tmp string) []string {
	t.Helper()
	dirs, err := filepath.Glob(filepath.Join(tmp, "embedpg-*"))
	if err != nil {
		t.Fatal(err)
	}
	return dirs
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

// TestStopsCleanlyOnSignals checks what `make run` promises: the status
// page and metrics are served where printed, the printed connect command
// works as printed, and Ctrl-C (SIGINT to the foreground process group),
// SIGTERM and a closed terminal (SIGHUP) each stop the cluster with exit
// status 0 and nothing left in TMPDIR.
func TestStopsCleanlyOnSignals(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP} {
		t.Run(sig.String(), func(t *testing.T) {
			t.Parallel()
			tmp := testbin.ServerTempDir(t)
			r := startCluster(t, tmp, filepath.Dir(testbin.Binary(t)))
			r.waitStarted(t)
			if n := len(clusterDirs(t, tmp)); n != 2 {
				t.Errorf("%d embedded clusters in TMPDIR while running, want 2", n)
			}

			page := r.printed(t, "Status page:")
			if code, body := get(t, page); code != http.StatusOK || !strings.Contains(body, "<html") {
				t.Errorf("GET %s = %d:\n%s", page, code, body)
			}
			metricsURL := strings.Fields(r.printed(t, "Metrics:"))[0]
			if code, body := get(t, metricsURL); code != http.StatusOK || !strings.Contains(body, `tpcd_node="participant-0"`) {
				t.Errorf("GET %s = %d, want every node's metrics:\n%s", metricsURL, code, body)
			}
			if code, body := get(t, strings.TrimSuffix(metricsURL, "metrics")+"readyz"); code != http.StatusOK {
				t.Errorf("readyz = %d %s", code, body)
			}

			// The connect command, run as printed from where the cluster
			// runs, with a script on standard input.
			connect := r.printed(t, "Connect with:")
			sh := exec.Command("/bin/sh", "-c", connect)
			sh.Dir = r.cmd.Dir
			sh.Stdin = strings.NewReader("begin; @0 create table t (k int); @0 insert into t values (1); commit\n")
			if out, err := sh.CombinedOutput(); err != nil || !strings.Contains(string(out), "COMMIT") {
				t.Errorf("%s: %v\n%s", connect, err, out)
			}

			if err := syscall.Kill(-r.cmd.Process.Pid, sig); err != nil {
				t.Fatal(err)
			}
			r.wait(t)
			if r.err != nil {
				t.Errorf("exit after %v: %v, want status 0", sig, r.err)
			}
			if left := clusterDirs(t, tmp); len(left) != 0 {
				t.Errorf("left in TMPDIR after %v: %v", sig, left)
			}
		})
	}
}

// TestRemovesStaleClustersOfDeadRuns kills a run with SIGKILL, which no
// program can clean up after, and checks that the next start removes what
// it left while the clusters of a run still alive are kept.
func TestRemovesStaleClustersOfDeadRuns(t *testing.T) {
	tmp := testbin.ServerTempDir(t)
	wd := filepath.Dir(testbin.Binary(t))
	live := startCluster(t, tmp, wd)
	live.waitStarted(t)
	liveDirs := clusterDirs(t, tmp)

	dead := startCluster(t, tmp, wd)
	dead.waitStarted(t)
	if err := dead.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	dead.wait(t)
	var deadDirs []string
	for _, d := range clusterDirs(t, tmp) {
		if !slices.Contains(liveDirs, d) {
			deadDirs = append(deadDirs, d)
		}
	}
	if len(liveDirs) != 2 || len(deadDirs) != 2 {
		t.Fatalf("clusters of the live run %v, of the killed run %v: want 2 each", liveDirs, deadDirs)
	}

	next := startCluster(t, tmp, wd)
	next.waitStarted(t)
	for _, d := range deadDirs {
		if _, err := os.Stat(d); err == nil {
			t.Errorf("%s of the killed run is still there after the next start", d)
		}
	}
	for _, d := range liveDirs {
		if _, err := os.Stat(filepath.Join(d, "data", "PG_VERSION")); err != nil {
			t.Errorf("the live run's cluster %s was touched: %v", d, err)
		}
	}
	for _, r := range []*clusterRun{live, next} {
		syscall.Kill(r.cmd.Process.Pid, syscall.SIGTERM)
		r.wait(t)
		if r.err != nil {
			t.Errorf("exit after SIGTERM: %v", r.err)
		}
	}
	if left := clusterDirs(t, tmp); len(left) != 0 {
		t.Errorf("left in TMPDIR: %v", left)
	}
}
