package client

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/internal/testbin"
)

func TestReconnect(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 2, engine.CoordinatorConfig{})
	c.createTable(t, "CREATE TABLE kv (k int PRIMARY KEY, v text)")
	var out, errs testbin.SyncBuffer
	r := newRunner(Options{Coordinator: c.CoordAddr, Stdout: &out, Stderr: &errs, ReconnectWait: 500 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	defer r.finish(ctx)
	run := func(text string) error {
		t.Helper()
		_, err := r.run(ctx, Complete{Text: text}, "")
		return err
	}
	must := func(text string) {
		t.Helper()
		if err := run(text); err != nil {
			t.Fatalf("%s: %v\nstderr: %s", text, err, errs.Take())
		}
	}

	must("begin")
	must("@0 insert into kv values (1, 'lost')")
	tx := r.sess.Tx()
	epoch := r.sess.Epoch()
	out.Take()

	// The coordinator restarts while the transaction is open: it aborts
	// it (nothing was decided), and the client says so before it would
	// run the next statement in a transaction that no longer exists.
	c.RestartCoordinator()
	err := run("@1 insert into kv values (2, 'lost too')")
	if err == nil || !regexp.MustCompile(`^transaction \d+ is gone \(the coordinator restarted and aborted it\), so the statement did not run; type begin for a new one$`).MatchString(err.Error()) {
		t.Fatalf("exec after restart: %v", err)
	}
	notices := errs.Take()
	wantRestart := regexp.QuoteMeta("coordinator "+c.CoordAddr+" restarted or took over (epoch ") + `\d+ -> \d+\); reconnected`
	for _, re := range []string{wantRestart, `transaction \d+ is gone: the coordinator restarted and aborted it`} {
		if !regexp.MustCompile(re).MatchString(notices) {
			t.Fatalf("notices %q lack %q", notices, re)
		}
	}
	if r.sess.Epoch() <= epoch {
		t.Fatalf("epoch %d after restart, was %d", r.sess.Epoch(), epoch)
	}
	must("status")
	got := out.Take()
	t.Logf("status after restart: %s", got)
	if !regexp.MustCompile(`^transaction ` + strconv.FormatUint(uint64(tx), 10) + `: aborted \(the coordinator restarted while it was open, and keeps no record of it\)\n$`).MatchString(got) {
		t.Fatalf("status after restart: %q", got)
	}

	// The coordinator is down: commands fail on one line, the session
	// lives on, and the first command after it is back says so.
	c.StopCoordinator()
	err = run("nodes")
	if err == nil || !strings.Contains(err.Error(), "coordinator "+c.CoordAddr+" unreachable") {
		t.Fatalf("nodes while down: %v", err)
	}
	if n := errs.Take(); !strings.Contains(n, "lost the connection to coordinator") {
		t.Fatalf("notices while down: %q", n)
	}
	c.StartCoordinator()
	must("begin")
	if n := errs.Take(); !regexp.MustCompile(wantRestart).MatchString(n) {
		t.Fatalf("notices after the coordinator came back: %q", n)
	}
	must("@1 insert into kv values (3, 'kept')")
	must("commit")
	c.waitRows(t, 1, "kv", 1)
	if n := c.count(t, 0, "SELECT count(*) FROM kv") + c.count(t, 1, "SELECT count(*) FROM kv"); n != 1 {
		t.Fatalf("%d rows, want only the one committed after the restarts", n)
	}
}

// TestStandbyAddresses: a session given a coordinator that is gone and a
// standby that serves (tpcd coordinator --lease) runs its commands on the
// standby and names it.
func TestStandbyAddresses(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 2, engine.CoordinatorConfig{})
	c.createTable(t, "CREATE TABLE kv (k int PRIMARY KEY, v text)")
	var out, errs testbin.SyncBuffer
	gone := testbin.RefusingAddr(t)
	r := newRunner(Options{Coordinator: gone, Standbys: []string{c.CoordAddr}, Stdout: &out, Stderr: &errs})
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	defer r.finish(ctx)
	for _, text := range []string{"begin", "@0 insert into kv values (1, 'a')", "@1 insert into kv values (1, 'a')", "commit"} {
		if _, err := r.run(ctx, Complete{Text: text}, ""); err != nil {
			t.Fatalf("%s: %v\nstderr: %s", text, err, errs.Take())
		}
	}
	if !strings.Contains(out.String(), "COMMIT") || r.sess.Addr() != c.CoordAddr {
		t.Fatalf("after a commit through the standby: calls go to %s (want %s), output:\n%s", r.sess.Addr(), c.CoordAddr, out.String())
	}
}
