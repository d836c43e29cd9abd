package chaos

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/rpc"
)

// Observed is what the harness finds in the cluster once it is quiet.
// Transactions are keyed by coordinator incarnation and id: the rows name
// both, and each incarnation's states were read from that incarnation.
type Observed struct {
	// Rows holds, per participant, the number of rows of each transaction.
	Rows []map[TxKey]int
	// Prepared holds, per participant, prepared transactions of tpcd that
	// are still in pg_prepared_xacts.
	Prepared [][]string
	// Status is the state of each recorded transaction at the coordinator
	// incarnation that issued it: the last one's after the faults, an
	// earlier one's as it was when that coordinator was replaced.
	Status map[TxKey]string
	// Alarms are lines of the node logs that report a violation or a crash
	// of the program itself (a panic).
	Alarms []string
}

// Verdict is the outcome of Check.
type Verdict struct {
	Violations []string
	// Applied counts transactions by what the data says: committed (rows
	// present) or aborted (no rows).
	AppliedCommit, AppliedAbort int
	// UnknownCommit and UnknownAbort resolve the transactions whose client
	// got no definite answer.
	UnknownCommit, UnknownAbort int
}

// finalStates are the coordinator states after which nothing changes.
// "forgotten" is not one: the coordinator keeps every outcome for a day,
// so a transaction whose client heard nothing always gets its answer.
var finalStates = []string{"committed", "aborted"}

func isFinal(state string) bool { return slices.Contains(finalStates, state) }

// Check compares what clients were told with what the cluster holds. It
// tells transactions apart by coordinator incarnation and id (TxKey), never
// by id alone: a replaced coordinator issues the old ids again.
//
// A transaction committed on some node (it has rows there) must be
// committed on every node it wrote to, with exactly the rows whose inserts
// were acknowledged; it must not have been told abort, have had a failed
// statement (or sent one that cannot succeed in the call that committed
// it), or have been given up by its client. A transaction without rows
// anywhere must not have been told commit. The coordinator's final state
// must agree with the data; rows of transactions nobody began, prepared
// transactions left behind and alarms in the node logs are violations too.
// A transaction orphaned by a replaced coordinator has no state anywhere;
// any row of it is a violation.
func Check(records []*TxRecord, obs Observed) Verdict {
	var v Verdict
	bad := func(r *TxRecord, format string, args ...any) {
		v.Violations = append(v.Violations, fmt.Sprintf("%s (client %d, told %s): ", r.Key(), r.Client, r.Told)+fmt.Sprintf(format, args...))
	}
	known := map[TxKey]bool{}
	for _, r := range records {
		known[r.Key()] = true
		rows := make([]int, len(obs.Rows))
		var present, acked []int
		for i := range obs.Rows {
			rows[i] = obs.Rows[i][r.Key()]
			if rows[i] > 0 {
				present = append(present, i)
			}
			if i < len(r.Acked) && r.Acked[i] > 0 {
				acked = append(acked, i)
			}
		}
		state := obs.Status[r.Key()]
		if r.Told == ToldCommit && r.Failed {
			bad(r, "told commit although a statement failed (%s)", r.Reason)
		}
		// A transaction sent whole in one call commits all of its
		// statements or none; sent a statement at a time, one refused
		// before it ran may leave the rest to commit.
		cannotCommit := r.OneCall && r.PlannedFail
		if r.Told == ToldCommit && cannotCommit {
			bad(r, "told commit although it sent a statement that cannot succeed in the same call")
		}
		if len(present) > 0 {
			v.AppliedCommit++
			if r.Told == ToldUnknown {
				v.UnknownCommit++
			}
			switch {
			case r.Told == ToldAbort:
				bad(r, "client was told abort (%s) but rows are committed on nodes %v", r.Reason, present)
			case r.Failed:
				bad(r, "a statement failed (%s) but rows are committed on nodes %v", r.Reason, present)
			case cannotCommit:
				bad(r, "it sent a statement that cannot succeed in the same call, but rows are committed on nodes %v", present)
			case r.Orphaned:
				bad(r, "left open when its coordinator was replaced, but rows are committed on nodes %v", present)
			case r.Lost || r.RolledBack:
				bad(r, "the client never asked to commit but rows are committed on nodes %v", present)
			}
			for i := range rows {
				want := 0
				if i < len(r.Acked) {
					want = r.Acked[i]
				}
				if rows[i] != want {
					bad(r, "not atomic: node %d has %d rows, %d inserts were acknowledged there (rows per node %v)", i, rows[i], want, rows)
				}
			}
			if state == "aborted" {
				bad(r, "the coordinator says aborted but rows are committed on nodes %v", present)
			}
		} else {
			v.AppliedAbort++
			if r.Told == ToldUnknown {
				v.UnknownAbort++
			}
			if r.Told == ToldCommit && len(acked) > 0 {
				bad(r, "client was told commit but no node has its rows (acknowledged on nodes %v)", acked)
			}
			if state == "committed" && len(acked) > 0 {
				bad(r, "the coordinator says committed but no node has its rows")
			}
		}
		switch {
		case r.Orphaned:
			// Its coordinator is gone with its log: no one can tell its
			// state, only the data can show it never committed.
		case r.Plain:
			// No coordinator ever knew it: the data alone tells.
		case state == "":
			bad(r, "no status from the coordinator")
		case state == "unknown":
			bad(r, "the coordinator says it never issued this transaction id")
		case state == "forgotten":
			bad(r, "the coordinator forgot its outcome, which it must keep for a day: a client that heard nothing cannot learn it")
		case !isFinal(state):
			bad(r, "still %s after the faults stopped", state)
		}
	}
	for i, m := range obs.Rows {
		var phantom []TxKey
		for k := range m {
			if !known[k] {
				phantom = append(phantom, k)
			}
		}
		slices.SortFunc(phantom, compareKeys)
		for _, k := range phantom {
			v.Violations = append(v.Violations, fmt.Sprintf("node %d has %d rows of %s, which no client was given", i, m[k], k))
		}
	}
	for i, gids := range obs.Prepared {
		for _, g := range gids {
			v.Violations = append(v.Violations, fmt.Sprintf("node %d: prepared transaction %s left behind", i, g))
		}
	}
	for _, a := range obs.Alarms {
		v.Violations = append(v.Violations, "node log: "+a)
	}
	return v
}

func compareKeys(a, b TxKey) int {
	if a.Incarnation != b.Incarnation {
		return a.Incarnation - b.Incarnation
	}
	return cmp.Compare(a.TxID, b.TxID)
}

// statusPoller asks the coordinator for the state of transactions and
// keeps what it learnt, by incarnation and id: the states of a replaced
// incarnation stay as they were read from it.
type statusPoller struct {
	cl      *rpc.Failover
	mu      sync.Mutex
	state   map[TxKey]string
	lastErr error
}

func newStatusPoller(addrs []string) *statusPoller {
	return &statusPoller{cl: rpc.NewFailover(addrs, rpc.ClientOptions{DialTimeout: time.Second}), state: map[TxKey]string{}}
}

// keysOf lists the keys of the records of one coordinator incarnation.
func keysOf(records []*TxRecord, incarnation int) []TxKey {
	var out []TxKey
	for _, r := range records {
		if r.Incarnation == incarnation {
			out = append(out, r.Key())
		}
	}
	return out
}

// poll refreshes the state of every transaction not yet final and returns
// how many are not final. The coordinator answering must be the
// incarnation that issued keys: another one would answer about its own
// transaction of the same id.
func (s *statusPoller) poll(ctx context.Context, keys []TxKey) int {
	var todo []TxKey
	s.mu.Lock()
	for _, k := range keys {
		if !isFinal(s.state[k]) {
			todo = append(todo, k)
		}
	}
	s.mu.Unlock()
	const workers = 8
	var wg sync.WaitGroup
	next := make(chan TxKey)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range next {
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				var r engine.StatusReply
				err := s.cl.Call(cctx, api.MethodStatus, api.TxParams{TxID: engine.TxID(k.TxID)}, &r)
				cancel()
				s.mu.Lock()
				if err != nil {
					s.lastErr = err
				} else {
					s.state[k] = r.State
				}
				s.mu.Unlock()
			}
		}()
	}
feed:
	for _, k := range todo {
		select {
		case next <- k:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	open := 0
	for _, k := range keys {
		if !isFinal(s.state[k]) {
			open++
		}
	}
	return open
}

func (s *statusPoller) snapshot() map[TxKey]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[TxKey]string, len(s.state))
	for k, v := range s.state {
		out[k] = v
	}
	return out
}

// preparedLeft lists tpcd's prepared transactions on a participant's
// server (all databases: GIDs are per server).
func preparedLeft(ctx context.Context, uri string) ([]string, error) {
	return queryStrings(ctx, uri, "SELECT gid FROM pg_prepared_xacts WHERE gid LIKE 'tpcd:%' ORDER BY gid")
}

func queryStrings(ctx context.Context, uri, sql string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, uri)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, sql)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// rowsPerTx counts the workload's rows of each transaction on a data
// database, by the incarnation and id each row names.
func rowsPerTx(ctx context.Context, uri string) (map[TxKey]int, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, uri)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, "SELECT incarnation, tx, count(*) FROM "+rowsTable+" GROUP BY incarnation, tx")
	if err != nil {
		return nil, err
	}
	out := map[TxKey]int{}
	var incarnation int
	var tx int64
	var n int
	_, err = pgx.ForEachRow(rows, []any{&incarnation, &tx, &n}, func() error {
		out[TxKey{Incarnation: incarnation, TxID: uint64(tx)}] = n
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("count rows: %w", err)
	}
	return out, nil
}

// alarmMarks are the log texts that make a node log line an alarm: the
// nodes' own atomicity checks, and the Go runtime's crash reports.
var alarmMarks = []string{"ATOMICITY VIOLATION", "violation recorded", "panic:", "fatal error:"}

// refusalMark is in the warning a participant logs when it refuses a new
// cluster because it holds transactions of the old one in doubt.
const refusalMark = "takes no work from cluster"

// logFacts is what a node log tells beyond alarms.
type logFacts struct {
	errorLines int
	// refusals are the lines where a participant refused a new cluster.
	refusals []string
	// recoveries counts starts that recovered something: a coordinator
	// with transactions in flight, a participant with in-doubt ones;
	// pending sums those transactions.
	recoveries, pending int
	// takeOvers counts the times a coordinator took the log's slot
	// (the first start of the first coordinator included).
	takeOvers int
}

// takeOverMark is in the line a coordinator logs when it holds the slot of
// a log it shares (--lease).
const takeOverMark = "holding the coordinator's slot in the log"

// recoveredRe reads the in-flight (coordinator) or in-doubt (participant)
// count from the line a node logs when it has recovered.
var recoveredRe = regexp.MustCompile(`(?:coordinator|participant) recovered.* (?:in_flight|in_doubt)=([0-9]+)`)

// scanLog returns the alarm lines of a node log and what it says about
// errors and recoveries.
func scanLog(path string) (alarms []string, facts logFacts, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, facts, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.Contains(line, "level=ERROR") {
			facts.errorLines++
		}
		if strings.Contains(line, takeOverMark) {
			facts.takeOvers++
		}
		if strings.Contains(line, refusalMark) {
			facts.refusals = append(facts.refusals, line)
		}
		if m := recoveredRe.FindStringSubmatch(line); m != nil {
			if n, _ := strconv.Atoi(m[1]); n > 0 {
				facts.recoveries++
				facts.pending += n
			}
		}
		for _, m := range alarmMarks {
			if strings.Contains(line, m) {
				alarms = append(alarms, line)
				break
			}
		}
	}
	return alarms, facts, sc.Err()
}
