package replay_test

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/internal/pgtest"
	"github.com/tpcd/tpcd/internal/testbin"
	"github.com/tpcd/tpcd/internal/testcluster"
	"github.com/tpcd/tpcd/logstore"
	"github.com/tpcd/tpcd/node"
	"github.com/tpcd/tpcd/replay"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/replay")

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(testbin.Main(m, pgtest.Main))
}

// cluster is a coordinator and participants in this process
// (internal/testcluster), as separate tpcd processes would be.
type cluster struct {
	*testcluster.Cluster
	// began are the transactions begun through begin, which settled waits
	// for.
	began []engine.TxID
}

// startCluster starts n participants and a coordinator and creates the
// table kv (k int primary key, v text) on every participant. compact is
// the nodes' CompactEvery (negative: never). The ports are held for the
// whole test, so a node restarted on its port gets it back.
func startCluster(t *testing.T, n int, compact time.Duration) *cluster {
	t.Helper()
	return &cluster{Cluster: testcluster.Start(t, testcluster.Config{
		Participants: n,
		HoldPorts:    true,
		Logger:       slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
		Coordinator: func(o *node.CoordinatorOptions) {
			o.CompactEvery = compact
			o.Engine = engine.CoordinatorConfig{RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond}
		},
		Participant: func(_ int, o *node.ParticipantOptions) {
			o.CompactEvery, o.KeepEnded = compact, time.Millisecond
			o.Engine = engine.ParticipantConfig{InquireAfter: 100 * time.Millisecond, RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond}
		},
	})}
}

func (c *cluster) begin() engine.TxID {
	c.T.Helper()
	tx := c.Begin()
	c.began = append(c.began, tx)
	return tx
}

// logRef is one node's log, with the data database of a participant.
type logRef struct {
	node    string
	log     *pgxpool.Pool
	logURI  string
	data    *pgxpool.Pool
	dataURI string
}

func (c *cluster) logs() []logRef {
	out := []logRef{{node: api.CoordinatorName, log: c.CoordDBs.Log, logURI: c.CoordDBs.LogURI}}
	for i, d := range c.PartDBs {
		out = append(out, logRef{node: api.ParticipantName(engine.NodeID(i)), log: d.Log, logURI: d.LogURI, data: d.Data, dataURI: d.DataURI})
	}
	return out
}

// replayOf replays one node's log (with its data database for a
// participant).
func replayOf(t testing.TB, l logRef, opts replay.Options) *replay.Report {
	t.Helper()
	opts.Log, opts.Data = l.log, l.data
	rep, err := replay.Run(context.Background(), opts)
	if err != nil {
		t.Fatalf("replay %s: %v", l.node, err)
	}
	return rep
}

// settled waits until no node holds a transaction in memory and nothing
// is left prepared, judged by replaying every log.
func (c *cluster) settled() {
	c.T.Helper()
	// The coordinator first: until every participant has acknowledged, its
	// log may not yet show the decision (an abort is logged lazily) while
	// the participants' logs already look finished.
	testcluster.Eventually(c.T, "the coordinator ended every transaction begun", func() bool {
		for _, tx := range c.began {
			var st engine.StatusReply
			if err := c.Call(api.MethodStatus, api.TxParams{TxID: tx}, &st); err != nil {
				return false
			}
			switch st.State {
			case engine.PhaseCommitted.String(), engine.PhaseAborted.String(), "forgotten":
			default:
				return false
			}
		}
		return true
	})
	testcluster.Eventually(c.T, "every transaction ended on every node", func() bool {
		for _, l := range c.logs() {
			rep := replayOf(c.T, l, replay.Options{})
			if rep.Nodes[0].InMemory != 0 || !rep.Consistent() {
				return false
			}
			if rep.Nodes[0].Data != nil && rep.Nodes[0].Data.Prepared != 0 {
				return false
			}
		}
		return true
	})
}

// appendEvents writes hand-made events to a node's log as one row, as the
// node would.
func appendEvents(t *testing.T, pool *pgxpool.Pool, nodeName string, evs ...engine.Event) {
	t.Helper()
	entries := make([]logstore.Entry, len(evs))
	for i, ev := range evs {
		payload, err := engine.EncodeEvent(ev)
		if err != nil {
			t.Fatal(err)
		}
		entries[i] = logstore.Entry{Tx: uint64(ev.Tx()), Event: payload}
	}
	if _, err := logstore.New(pool).Append(context.Background(), nodeName, entries); err != nil {
		t.Fatal(err)
	}
}

// prepareByHand leaves a prepared transaction named gid on a data
// database, with a row in kv and, if marker, the outcome marker inside it
// (as a participant does). It is rolled back when the test ends, since a
// database with prepared transactions cannot be dropped.
func prepareByHand(t *testing.T, data *pgxpool.Pool, gid string, tx engine.TxID, key int, marker bool) {
	t.Helper()
	ctx := context.Background()
	conn, err := data.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	sql := fmt.Sprintf("BEGIN; INSERT INTO kv VALUES (%d, 'by hand');", key)
	if marker {
		sql += fmt.Sprintf(" INSERT INTO tpcd_markers (gid, tx) VALUES ('%s', %d);", gid, tx)
	}
	sql += fmt.Sprintf(" PREPARE TRANSACTION '%s'", gid)
	if _, err := conn.Exec(ctx, sql, pgx.QueryExecModeSimpleProtocol); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rollbackIfPrepared(t, data, gid) })
}

func rollbackIfPrepared(t *testing.T, data *pgxpool.Pool, gid string) {
	ctx := context.Background()
	var exists bool
	if err := data.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_prepared_xacts WHERE gid = $1)", gid).Scan(&exists); err != nil {
		t.Errorf("look for %s: %v", gid, err)
		return
	}
	if exists {
		if _, err := data.Exec(ctx, "ROLLBACK PREPARED '"+gid+"'", pgx.QueryExecModeSimpleProtocol); err != nil {
			t.Errorf("roll back %s: %v", gid, err)
		}
	}
}

var clusterRE = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)

// normalize hides the cluster id, which is random.
func normalize(s string) string { return clusterRE.ReplaceAllString(s, "<cluster>") }

// golden compares got with testdata/replay/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("..", "testdata", "replay", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if string(want) != got {
		t.Errorf("%s differs from the golden file (run with -update to accept):\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}
