package crash

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tpcd/tpcd/db/embedpg"
	"github.com/tpcd/tpcd/failpoint"
	"github.com/tpcd/tpcd/internal/pgtest"
)

// clients is the number of concurrent clients of the workload.
const clients = 8

// armedHit is the hit of the failpoint that kills: a few transactions pass
// the step first, so the crash lands among others in every phase.
const armedHit = "=3"

// TestCrashMatrix kills a node at every failpoint, restarts it and checks
// that recovery finishes every transaction consistently. The participant
// steps whose recovery differs when the yes vote may leave before the
// Prepared event is durable run again with --lazy-prepared.
//
// Cases run in parallel (go test's -parallel, GOMAXPROCS by default): each
// has its own processes, ports and databases, and much of a case is spent
// waiting for processes and PostgreSQL to start.
func TestCrashMatrix(t *testing.T) {
	t.Parallel()
	type matrixCase struct {
		failpoint string
		lazy      bool
	}
	var cases []matrixCase
	for _, fp := range failpoint.Names() {
		cases = append(cases, matrixCase{failpoint: fp})
	}
	for _, fp := range []string{failpoint.PartAfterPrepare, failpoint.PartAfterPreparedLogged, failpoint.PartAfterVote} {
		cases = append(cases, matrixCase{failpoint: fp, lazy: true})
	}
	for _, tc := range cases {
		name := tc.failpoint
		if tc.lazy {
			name += "/lazy-prepared"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			began := time.Now()
			armed := partName(1)
			if strings.HasPrefix(tc.failpoint, "coordinator/") {
				armed = coordName
			}
			c := newCluster(t, clusterSpec{participants: 3, lazyPrepared: tc.lazy})
			c.start(armed, tc.failpoint+armedHit)
			up := time.Since(began)
			w := startWorkload(t, c, clients)

			p := c.proc(armed)
			st := p.exited(t, time.Minute)
			if !killedBySIGKILL(st) {
				t.Fatalf("%s ended with %v, want SIGKILL by failpoint %s:\n%s", armed, st, tc.failpoint, tail(p.log(), 40))
			}
			if !strings.Contains(p.log(), "failpoint "+tc.failpoint+" fired") {
				t.Fatalf("%s was killed, but not by failpoint %s:\n%s", armed, tc.failpoint, tail(p.log(), 40))
			}
			died := time.Since(began)
			c.restart(p)
			w.waitCommits(5)
			live := time.Since(began)
			s := c.check(w.records())
			t.Logf("%s killed at %s, restarted: %s (up %s, died %s, live again %s, settled %s)", armed, name, s,
				up.Round(time.Millisecond), died.Round(time.Millisecond), live.Round(time.Millisecond), time.Since(began).Round(time.Millisecond))
		})
	}
}

// TestPostgresCrash kills a PostgreSQL server under load and restarts it;
// the tpcd nodes keep running and must recover on their own.
func TestPostgresCrash(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, server string }{
		{"participant-data-server", "data database of p1"},
		{"coordinator-log-server", "log database of the coordinator"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			began := time.Now()
			pg := pgtest.NewCluster(t, embedpg.Options{})
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := pg.CreateDatabase(ctx, "crash"); err != nil {
				t.Fatal(err)
			}
			spec := clusterSpec{participants: 3}
			if tc.name == "participant-data-server" {
				spec.partData = map[int]string{1: pg.URI("crash")}
			} else {
				spec.coordLog = pg.URI("crash")
			}
			c := newCluster(t, spec)
			c.start("", "")
			w := startWorkload(t, c, clients)
			w.waitCommits(20)
			if err := pg.Kill(); err != nil {
				t.Fatal(err)
			}
			// Let the load run into the dead server before it comes back.
			fails := w.fails.Load()
			waitFor(t, "the load to run into the dead server", time.Minute, func() bool {
				if tc.name == "participant-data-server" {
					return w.fails.Load() >= fails+3
				}
				return strings.Contains(c.coord.log(), "log append failed")
			})
			if err := pg.Restart(ctx); err != nil {
				t.Fatal(err)
			}
			w.waitCommits(10)
			s := c.check(w.records())
			t.Logf("%s killed and restarted: %s (%s)", tc.server, s, time.Since(began).Round(time.Millisecond))
		})
	}
}
