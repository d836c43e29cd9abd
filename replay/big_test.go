package replay_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/db"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/internal/pgtest"
	"github.com/tpcd/tpcd/internal/testbin"
	"github.com/tpcd/tpcd/logstore"
	"github.com/tpcd/tpcd/replay"
)

// bigLog is the shape of a generated log.
type bigLog struct {
	events    int // events written, about the number asked for
	ended     int // transactions that ended at both nodes
	undecided int // transactions left undecided (coordinator) and in doubt (participant)
}

// writeBigLog fills a fresh log database with about n events of a
// coordinator and one participant: transactions overlap 50 at a time, and
// one in a thousand is left undecided and in doubt, as a crash would.
func writeBigLog(t *testing.T, pool *pgxpool.Pool, n int) bigLog {
	t.Helper()
	ctx := context.Background()
	store := logstore.New(pool)
	// perRow is about how many events a node's append carries under load.
	const cluster, window, perRow = "5d0c1f8e-3b7a-4c2e-9f10-2a3b4c5d6e7f", 50, 20
	var out bigLog
	rows := map[string][]logstore.Entry{}
	flush := func(name string) {
		if _, err := store.Append(ctx, name, rows[name]); err != nil {
			t.Fatal(err)
		}
		rows[name] = rows[name][:0]
	}
	add := func(name string, ev engine.Event) {
		payload, err := engine.EncodeEvent(ev)
		if err != nil {
			t.Fatal(err)
		}
		rows[name] = append(rows[name], logstore.Entry{Tx: uint64(ev.Tx()), Event: payload})
		out.events++
		if len(rows[name]) == perRow {
			flush(name)
		}
	}
	coord, part := api.CoordinatorName, api.ParticipantName(0)
	p0 := []engine.NodeID{0}
	gid := func(tx engine.TxID) string { return engine.GID{Cluster: cluster, Epoch: 1, Tx: tx, Node: 0}.String() }
	undecided := func(tx engine.TxID) bool { return tx%1000 == 500 }
	add(coord, engine.CoordStarted{Cluster: cluster, Epoch: 1})
	add(part, engine.PartEpochSeen{Cluster: cluster, Epoch: 1})
	txs := n / 5 // five events per transaction: three of the coordinator, two of the participant
	for i := 1; i <= txs+window; i++ {
		if i <= txs {
			tx := engine.TxID(i)
			if i%1024 == 1 {
				add(coord, engine.CoordTxIDsReserved{Through: tx + 1023})
			}
			add(coord, engine.CoordPreparing{TxID: tx, Epoch: 1, Participants: p0})
			add(part, engine.PartPrepared{TxID: tx, GID: gid(tx)})
		}
		if o := i - window; o >= 1 && o <= txs {
			old := engine.TxID(o)
			if undecided(old) {
				out.undecided++
				continue
			}
			add(coord, engine.CoordDecided{TxID: old, Epoch: 1, Outcome: engine.OutcomeCommit, Participants: p0})
			add(part, engine.PartCommitted{TxID: old, GID: gid(old)})
			add(coord, engine.CoordEnded{TxID: old})
			out.ended++
		}
	}
	for name := range rows {
		flush(name)
	}
	// A log that grew over time has statistics from autovacuum; one filled
	// in seconds has none yet, and without them PostgreSQL plans each page
	// of Scan as a sort of all the node's remaining rows (docs/REPLAY.md).
	if _, err := pool.Exec(ctx, "ANALYZE tpcd_log"); err != nil {
		t.Fatal(err)
	}
	return out
}

// replayBig runs the tpcd binary on a generated log and returns its wall
// time, CPU time and peak resident set size, after checking what it reports.
func replayBig(t *testing.T, uri string, want bigLog) (wall, cpu time.Duration, rss int64) {
	t.Helper()
	cmd := exec.Command(testbin.Binary(t), "replay", "--log-db", uri, "--format", "json", "--limit", "5")
	began := time.Now()
	out, err := cmd.Output()
	took := time.Since(began)
	if err != nil {
		t.Fatalf("tpcd replay: %v", err)
	}
	var rep replay.Report
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatal(err)
	}
	var events int64
	for _, n := range rep.Nodes {
		events += n.Events
	}
	c, p := rep.Nodes[0], rep.Nodes[1]
	if events != int64(want.events) || c.States["committed"] != want.ended || c.States["preparing"] != want.undecided ||
		p.States["committed"] != want.ended || p.States["prepared"] != want.undecided || len(c.Transactions) != min(5, want.undecided) || !rep.Consistent() {
		t.Errorf("replay of %d events: %d events, coordinator %v, participant %v, %d problems; want %+v",
			want.events, events, c.States, p.States, rep.Problems, want)
	}
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		t.Fatal("no resource usage for the replay process")
	}
	cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return took, cpu, ru.Maxrss * 1024 // Linux reports kilobytes
}

// TestReplayBigLog shows that replay streams: the peak memory of replaying
// a million events is about that of a hundred thousand. It writes 1.1
// million events, so it runs only with TPCD_REPLAY_BIG=1; the figures are
// logged (go test -v) and quoted in docs/REPLAY.md. TPCD_REPLAY_BIG_EVENTS
// changes the size of the big log.
func TestReplayBigLog(t *testing.T) {
	if os.Getenv("TPCD_REPLAY_BIG") != "1" {
		t.Skip("set TPCD_REPLAY_BIG=1 to replay a log of a million events")
	}
	big := 1_000_000
	if s := os.Getenv("TPCD_REPLAY_BIG_EVENTS"); s != "" {
		var err error
		if big, err = strconv.Atoi(s); err != nil {
			t.Fatalf("TPCD_REPLAY_BIG_EVENTS: %v", err)
		}
	}
	var rss [2]int64
	for i, n := range []int{big / 10, big} {
		uri := pgtest.NewDB(t)
		pool := migratedURI(t, uri, db.MigrateLog)
		began := time.Now()
		shape := writeBigLog(t, pool, n)
		wrote := time.Since(began)
		took, cpu, peak := replayBig(t, uri, shape)
		rss[i] = peak
		t.Logf("%d events (%d transactions ended, %d in doubt): written in %s; replay took %s (%s CPU), peak RSS %.1f MiB",
			shape.events, shape.ended, shape.undecided, wrote.Round(time.Millisecond), took.Round(time.Millisecond), cpu.Round(time.Millisecond), float64(peak)/(1<<20))
	}
	// Memory that grew with the log would be ten times larger; a streaming
	// replay stays within noise of the small one.
	if rss[1] > 2*rss[0] {
		t.Errorf("peak RSS %d bytes for %d events against %d for a tenth of them: replay does not stream", rss[1], big, rss[0])
	}
}
