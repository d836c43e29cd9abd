package engine_test

import (
	"flag"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"

	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/engine/enginetest"
)

var update = flag.Bool("update", false, "rewrite the golden traces in testdata/trace (same as datadriven's -rewrite)")

// TestTrace replays the scenarios in testdata/trace. Each file drives one
// coordinator and its participants through enginetest.Cluster, a world where
// nothing happens unless the script says so: messages wait in the network
// until delivered, dropped or duplicated, data operations wait until
// completed, and events stay volatile until persisted. The output of each
// command is every event, effect and message it caused, rendered with the
// engine's Describe functions. Commands:
//
//	init participants=3 [protocol=decider|classic] [batch-size=3] [vote-timeout=5s] [lazy-prepared] [reserve-block=N] [remember-ended=N] [forge-votes] [asks-in-flight] [prompt-acks]
//	start [node=c|pN]          start every down node, or one
//	restart node=pN            same as start for one crashed node
//	crash node=pN              lose volatile events, held effects, issued data ops, open data txs
//	crash-data-db node=pN      the data database server alone crashes: open data txs are lost
//	lose-log node=c cluster=X  a down node's log is replaced by an empty one (a coordinator becomes cluster X)
//	forge to=pN kind=exec|prepare|decide cluster=X epoch=N tx=N [stmt=N] [sql=(...)] [outcome=..]   a message nobody sent
//	client begin | exec tx=1 node=0 sql=(...) | commit tx=1 | rollback tx=1 | status tx=1 | execute node=1 sql=(...)
//	client transact [tx=1] [commit] stmts=(0:sql|1:sql|...)   statements (and the commit) in one call
//	deliver [all] [from=..] [to=..] [kind=..] [tx=..] [stmt=..] [count=..]   (kind=ask|answer: a participant's question to its coordinator and the answer, with asks-in-flight)
//	drop [from=..] [to=..] [kind=..] [tx=..] [count=..]
//	duplicate [from=..] [to=..] [kind=..] [tx=..] [count=..]
//	fail-send [delivered] [from=..] [to=..] [kind=..] [tx=..]
//	data-done [all] [node=pN] [tx=..] [op=exec|prepare|commit-branch|settle|...] [error=(...)|error-after-prepare|error-after-commit|read-only|retry|force-prepare]
//	crash-after-data node=pN [tx=..] [op=..] [fault]   run the operation, then crash before the result is heard
//	persist [node=..] [lsn=..] make events durable and release what waited for them
//	tick [node=..] [advance=6s]
//	stabilize                  persist, run data ops and deliver until nothing is left
//	state
func TestTrace(t *testing.T) {
	if *update {
		if err := flag.Lookup("rewrite").Value.Set("true"); err != nil {
			t.Fatal(err)
		}
	}
	datadriven.Walk(t, "testdata/trace", func(t *testing.T, path string) {
		env := &traceEnv{}
		datadriven.RunTest(t, path, env.handle)
		// Checked in -update runs too: a rewrite must not record a broken
		// protocol as the expected behaviour.
		if env.broken != "" && !env.forges {
			t.Errorf("%s: %s, and the file does not break the protocol on purpose (init ... forge-votes)", path, env.broken)
		}
	})
}

// traceEnv runs one scenario file. Broken invariants appear in the output
// as "INVARIANT BROKEN" lines, traced by the cluster's checker.
type traceEnv struct {
	c   *enginetest.Cluster
	out []string
	// forges is set when the scenario breaks the protocol on purpose;
	// broken is the first broken invariant the checker traced.
	forges bool
	broken string
}

func (e *traceEnv) handle(t *testing.T, d *datadriven.TestData) string {
	e.out = nil
	var err error
	if d.Cmd != "init" && e.c == nil {
		err = fmt.Errorf("init first")
	} else {
		err = e.run(d)
	}
	if err != nil {
		e.out = append(e.out, "error: "+err.Error())
	}
	if len(e.out) == 0 {
		return "ok\n"
	}
	return strings.Join(e.out, "\n") + "\n"
}

// traceArgs lists the arguments each command takes (init checks its own),
// so that a misspelt one fails the trace instead of being ignored.
var traceArgs = func() map[string][]string {
	filter := []string{"from", "to", "kind", "tx", "stmt", "count"}
	data := []string{"node", "op", "tx", "error", "all"}
	for _, f := range faults {
		data = append(data, f.flag)
	}
	return map[string][]string{
		"start":            {"node"},
		"restart":          {"node"},
		"crash":            {"node"},
		"lose-log":         {"node", "cluster"},
		"forge":            {"to", "kind", "cluster", "epoch", "tx", "stmt", "sql", "outcome"},
		"crash-data-db":    {"node"},
		"client":           {"begin", "exec", "direct", "commit", "rollback", "status", "resolve", "execute", "transact", "tx", "node", "sql", "stmts", "key"},
		"deliver":          append(slices.Clone(filter), "all"),
		"drop":             filter,
		"duplicate":        filter,
		"fail-send":        append(slices.Clone(filter), "delivered"),
		"data-done":        data,
		"crash-after-data": data,
		"persist":          {"node", "lsn"},
		"tick":             {"node", "advance"},
		"stabilize":        nil,
		"state":            nil,
	}
}()

func (e *traceEnv) run(d *datadriven.TestData) error {
	if allowed, ok := traceArgs[d.Cmd]; ok {
		for _, a := range d.CmdArgs {
			if !slices.Contains(allowed, a.Key) {
				return fmt.Errorf("%s: unknown argument %q", d.Cmd, a.Key)
			}
		}
	}
	switch d.Cmd {
	case "init":
		return e.init(d)
	case "start", "restart":
		return e.start(d)
	case "crash":
		return e.onNode(d, e.c.Crash)
	case "lose-log":
		cluster, _ := arg(d, "cluster")
		return e.onNode(d, func(n engine.NodeID) error { return e.c.LoseLog(n, cluster) })
	case "forge":
		return e.forge(d)
	case "crash-data-db":
		return e.onNode(d, e.c.CrashDataDB)
	case "client":
		return e.client(d)
	case "deliver":
		return e.deliver(d)
	case "drop", "duplicate", "fail-send":
		return e.mangle(d)
	case "data-done", "crash-after-data":
		return e.data(d)
	case "persist":
		return e.persist(d)
	case "tick":
		return e.tick(d)
	case "stabilize":
		return e.stabilize()
	case "state":
		e.out = append(e.out, strings.TrimRight(e.c.State(), "\n"))
		return nil
	}
	return fmt.Errorf("unknown command %q", d.Cmd)
}

func (e *traceEnv) trace(s string) {
	if e.broken == "" && strings.HasPrefix(s, "INVARIANT BROKEN") {
		e.broken = s
	}
	e.out = append(e.out, s)
}

func (e *traceEnv) init(d *datadriven.TestData) error {
	cfg := enginetest.Config{Participants: 3, ClusterID: "7a3f", Trace: e.trace, AnswerAtOnce: true}
	for _, a := range d.CmdArgs {
		var err error
		switch a.Key {
		case "participants":
			cfg.Participants, err = intArg(a)
		case "batch-size":
			cfg.Coordinator.BatchSize, err = intArg(a)
		case "reserve-block":
			cfg.Coordinator.ReserveBlock, err = intArg(a)
		case "remember-ended":
			cfg.Coordinator.RememberEnded, err = intArg(a)
		case "vote-timeout":
			cfg.Coordinator.VoteTimeout, err = durationArg(a)
		case "lazy-prepared":
			cfg.Participant.LazyPrepared = true
		case "forge-votes":
			cfg.ForgeVotes = true
			e.forges = true
		case "asks-in-flight":
			cfg.AnswerAtOnce = false
		case "prompt-acks":
			cfg.PromptAcks = true
		case "protocol":
			if len(a.Vals) != 1 {
				return fmt.Errorf("init: protocol=decider|classic")
			}
			cfg.Coordinator.Protocol, err = engine.ParseProtocol(a.Vals[0])
		default:
			return fmt.Errorf("init: unknown argument %q", a.Key)
		}
		if err != nil {
			return fmt.Errorf("init %s: %w", a.Key, err)
		}
	}
	e.c = enginetest.New(cfg)
	return nil
}

func intArg(a datadriven.CmdArg) (int, error) {
	if len(a.Vals) != 1 {
		return 0, fmt.Errorf("want one value")
	}
	return strconv.Atoi(a.Vals[0])
}

func durationArg(a datadriven.CmdArg) (time.Duration, error) {
	if len(a.Vals) != 1 {
		return 0, fmt.Errorf("want one value")
	}
	return time.ParseDuration(a.Vals[0])
}

// arg returns the joined values of a key; SQL with top-level commas is split
// by the directive parser and put back together here.
func arg(d *datadriven.TestData, key string) (string, bool) {
	a, ok := d.Arg(key)
	if !ok {
		return "", false
	}
	return strings.Join(a.Vals, ", "), true
}

func parseNode(s string) (engine.NodeID, error) {
	switch s {
	case "c", "coordinator":
		return engine.CoordinatorNode, nil
	}
	n, err := strconv.Atoi(strings.TrimPrefix(s, "p"))
	if err != nil {
		return 0, fmt.Errorf("bad node %q", s)
	}
	return engine.NodeID(n), nil
}

func (e *traceEnv) node(d *datadriven.TestData, key string, required bool) (engine.NodeID, error) {
	s, ok := arg(d, key)
	if !ok {
		if required {
			return 0, fmt.Errorf("%s: %s= is required", d.Cmd, key)
		}
		return 0, errNoArg
	}
	return parseNode(s)
}

var errNoArg = fmt.Errorf("no such argument")

// uintArg reads key=N, 0 when absent.
func uintArg(d *datadriven.TestData, key string) (uint64, error) {
	s, ok := arg(d, key)
	if !ok {
		return 0, nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("bad %s %q", key, s)
	}
	return v, nil
}

// onNode runs do on the node the command names (node=..).
func (e *traceEnv) onNode(d *datadriven.TestData, do func(engine.NodeID) error) error {
	n, err := e.node(d, "node", true)
	if err != nil {
		return err
	}
	return do(n)
}

// eachNode runs f on the node d names (node=), or without one on every
// node that is up (down, for a start): a command that names no node
// means all it applies to.
func (e *traceEnv) eachNode(d *datadriven.TestData, required, down bool, f func(engine.NodeID) error) error {
	n, err := e.node(d, "node", required)
	if err != errNoArg {
		if err != nil {
			return err
		}
		return f(n)
	}
	for _, n := range e.c.Nodes() {
		if n.Up() != down {
			if err := f(n.ID); err != nil {
				return err
			}
		}
	}
	return nil
}

// forge puts a coordinator message nobody sent in flight to a participant,
// as an outsider could: forge to=p0 kind=exec|prepare|decide cluster=X
// epoch=N tx=N [stmt=N] [sql=(...)] [outcome=commit|abort].
func (e *traceEnv) forge(d *datadriven.TestData) error {
	to, err := e.node(d, "to", true)
	if err != nil {
		return err
	}
	var h engine.Header
	h.Cluster, _ = arg(d, "cluster")
	var tx, stmt, epoch uint64
	for key, v := range map[string]*uint64{"tx": &tx, "stmt": &stmt, "epoch": &epoch} {
		if *v, err = uintArg(d, key); err != nil {
			return fmt.Errorf("forge: %w", err)
		}
	}
	h.Epoch = engine.Epoch(epoch)
	kind, _ := arg(d, "kind")
	var m engine.Message
	switch kind {
	case "exec":
		sql, _ := arg(d, "sql")
		m = engine.ExecRequest{Header: h, TxID: engine.TxID(tx), Stmt: int(stmt), SQL: sql}
	case "prepare":
		m = engine.PrepareRequest{Header: h, TxID: engine.TxID(tx), Stmts: int(stmt)}
	case "decide":
		var o engine.Outcome
		s, _ := arg(d, "outcome")
		if err := o.UnmarshalText([]byte(s)); err != nil {
			return err
		}
		m = engine.DecisionRequest{Header: h, TxID: engine.TxID(tx), TxEpoch: h.Epoch, Outcome: o}
	default:
		return fmt.Errorf("forge: kind=exec|prepare|decide, not %q", kind)
	}
	e.c.Forge(to, m)
	return nil
}

func (e *traceEnv) start(d *datadriven.TestData) error {
	return e.eachNode(d, d.Cmd == "restart", true, e.c.Start)
}

func (e *traceEnv) client(d *datadriven.TestData) error {
	if len(d.CmdArgs) == 0 {
		return fmt.Errorf("client: which call?")
	}
	v, err := uintArg(d, "tx")
	if err != nil {
		return err
	}
	tx := engine.TxID(v)
	node, err := e.node(d, "node", false)
	if err != nil && err != errNoArg {
		return err
	}
	sql, _ := arg(d, "sql")
	key, _ := arg(d, "key")
	switch call := d.CmdArgs[0].Key; call {
	case "begin":
		e.c.Begin(key)
	case "exec":
		e.c.Exec(tx, node, sql)
	case "direct":
		// "client direct tx=N node=K sql=(...)": straight to the
		// participant; "commit direct" and "rollback direct" then name
		// the participants it went to.
		if d.HasArg("commit") {
			e.c.CommitDirect(tx)
		} else if d.HasArg("rollback") {
			e.c.RollbackDirect(tx)
		} else {
			e.c.Direct(tx, node, sql)
		}
	case "commit":
		e.c.Commit(tx)
	case "rollback":
		e.c.Rollback(tx)
	case "status":
		e.c.Status(tx, key)
	case "resolve":
		e.c.Resolve(tx)
	case "execute":
		e.c.Execute(node, sql, key)
	case "transact":
		list, _ := arg(d, "stmts")
		var stmts []engine.Statement
		for item := range strings.SplitSeq(list, "|") {
			n, q, ok := strings.Cut(item, ":")
			id, err := strconv.Atoi(strings.TrimSpace(n))
			if !ok || err != nil {
				return fmt.Errorf("client transact: stmts=(N:sql|N:sql...), not %q", item)
			}
			stmts = append(stmts, engine.Statement{Node: engine.NodeID(id), SQL: strings.TrimSpace(q)})
		}
		e.c.Transact(tx, stmts, d.HasArg("commit"), key)
	default:
		return fmt.Errorf("client: unknown call %q", call)
	}
	return nil
}

// msgFilter selects messages in flight by sender, destination, kind and
// transaction.
type msgFilter struct {
	from, to *engine.NodeID
	kind     string
	tx       engine.TxID
	stmt     int // -1: any
	count    int
}

func (e *traceEnv) filter(d *datadriven.TestData) (msgFilter, error) {
	f := msgFilter{stmt: -1}
	for _, key := range []string{"from", "to"} {
		n, err := e.node(d, key, false)
		if err == errNoArg {
			continue
		}
		if err != nil {
			return f, err
		}
		if key == "from" {
			f.from = &n
		} else {
			f.to = &n
		}
	}
	f.kind, _ = arg(d, "kind")
	tx, err := uintArg(d, "tx")
	if err != nil {
		return f, err
	}
	f.tx = engine.TxID(tx)
	if s, ok := arg(d, "stmt"); ok {
		v, err := strconv.Atoi(s)
		if err != nil {
			return f, fmt.Errorf("bad stmt %q", s)
		}
		f.stmt = v
	}
	if s, ok := arg(d, "count"); ok {
		v, err := strconv.Atoi(s)
		if err != nil {
			return f, fmt.Errorf("bad count %q", s)
		}
		f.count = v
	}
	return f, nil
}

func (f msgFilter) match(env enginetest.Envelope) bool {
	return (f.from == nil || *f.from == env.From) && (f.to == nil || *f.to == env.To) &&
		(f.kind == "" || f.kind == env.Kind()) && (f.tx == 0 || f.tx == env.Tx()) &&
		(f.stmt < 0 || f.stmt == stmtOf(env.Msg))
}

// stmtOf is the statement number of an exec request or result, -1 for other
// messages.
func stmtOf(m engine.Message) int {
	switch m := m.(type) {
	case engine.ExecRequest:
		return m.Stmt
	case engine.ExecResult:
		return m.Stmt
	}
	return -1
}

// matching lists the ids of the messages in flight the filter selects.
func (e *traceEnv) matching(f msgFilter) []uint64 {
	var ids []uint64
	for _, env := range e.c.Messages() {
		if f.match(env) && (f.count == 0 || len(ids) < f.count) {
			ids = append(ids, env.ID)
		}
	}
	return ids
}

func (e *traceEnv) index(id uint64) int {
	return slices.IndexFunc(e.c.Messages(), func(env enginetest.Envelope) bool { return env.ID == id })
}

func (e *traceEnv) deliver(d *datadriven.TestData) error {
	f, err := e.filter(d)
	if err != nil {
		return err
	}
	if d.HasArg("all") {
		// Keep going, new messages included, until nothing matches.
		for i := 0; ; i++ {
			if i == 1000 {
				return fmt.Errorf("deliver all: still going after 1000 messages")
			}
			ids := e.matching(f)
			if len(ids) == 0 {
				return nil
			}
			e.c.Deliver(e.index(ids[0]))
		}
	}
	ids := e.matching(f)
	if len(ids) == 0 {
		return fmt.Errorf("no message in flight matches")
	}
	for _, id := range ids {
		if i := e.index(id); i >= 0 {
			e.c.Deliver(i)
		}
	}
	return nil
}

func (e *traceEnv) mangle(d *datadriven.TestData) error {
	f, err := e.filter(d)
	if err != nil {
		return err
	}
	ids := e.matching(f)
	if len(ids) == 0 {
		return fmt.Errorf("no message in flight matches")
	}
	for _, id := range ids {
		i := e.index(id)
		switch d.Cmd {
		case "drop":
			e.c.Drop(i)
		case "duplicate":
			e.c.Duplicate(i)
		case "fail-send":
			e.c.FailSend(i, d.HasArg("delivered"))
		}
	}
	return nil
}

// faults maps data-done flags to faults; the first flag present wins, so
// "retry error=(...)" is a retry with that message.
var faults = []struct {
	flag  string
	fault enginetest.Fault
}{
	{"error-after-prepare", enginetest.FailAfterPrepare},
	{"error-after-commit", enginetest.FailAfterCommit},
	{"retry", enginetest.RetryOp},
	{"read-only", enginetest.ForceReadOnly},
	{"force-prepare", enginetest.ForcePrepare},
	{"error", enginetest.FailOp},
}

// data completes issued data operations: the first runnable one that
// matches, or with "all" every one until none is left.
func (e *traceEnv) data(d *datadriven.TestData) error {
	var nodes []engine.NodeID
	n, err := e.node(d, "node", false)
	switch {
	case err == errNoArg:
		for _, p := range e.c.Participants() {
			nodes = append(nodes, p.ID)
		}
	case err != nil:
		return err
	default:
		nodes = []engine.NodeID{n}
	}
	op, _ := arg(d, "op")
	v, err := uintArg(d, "tx")
	if err != nil {
		return err
	}
	tx := engine.TxID(v)
	fault := enginetest.NoFault
	for _, f := range faults {
		if d.HasArg(f.flag) {
			fault = f.fault
			break
		}
	}
	msg, _ := arg(d, "error")
	find := func() (engine.NodeID, int, bool) {
		for _, id := range nodes {
			for _, i := range e.c.Runnable(id) {
				o := e.c.Node(id).Ops()[i]
				if (op == "" || o.Op.String() == op) && (tx == 0 || o.TxID == tx) {
					return id, i, true
				}
			}
		}
		return 0, 0, false
	}
	for done := 0; ; done++ {
		id, i, ok := find()
		if !ok {
			if done == 0 {
				return fmt.Errorf("no runnable data operation matches")
			}
			return nil
		}
		if d.Cmd == "crash-after-data" {
			return e.c.RunDataThenCrash(id, i, fault)
		}
		if err := e.c.RunDataMsg(id, i, fault, msg); err != nil {
			return err
		}
		if !d.HasArg("all") {
			return nil
		}
	}
}

func (e *traceEnv) persist(d *datadriven.TestData) error {
	lsn, err := uintArg(d, "lsn")
	if err != nil {
		return err
	}
	return e.eachNode(d, false, false, func(n engine.NodeID) error { return e.c.Persist(n, engine.LSN(lsn)) })
}

func (e *traceEnv) tick(d *datadriven.TestData) error {
	if a, ok := d.Arg("advance"); ok {
		dur, err := durationArg(a)
		if err != nil {
			return err
		}
		e.c.Advance(dur)
	}
	return e.eachNode(d, false, false, e.c.Tick)
}

// stabilize runs the world without faults until nothing is left to do:
// persist everything, complete every data operation, deliver every message.
func (e *traceEnv) stabilize() error {
	for i := 0; i < 10000; i++ {
		progress := false
		for _, n := range e.c.Nodes() {
			if n.Up() && n.Pending() > 0 {
				if err := e.c.Persist(n.ID, 0); err != nil {
					return err
				}
				progress = true
			}
		}
		for _, n := range e.c.Participants() {
			if r := e.c.Runnable(n.ID); len(r) > 0 {
				if err := e.c.RunData(n.ID, r[0], enginetest.NoFault); err != nil {
					return err
				}
				progress = true
			}
		}
		if len(e.c.Messages()) > 0 {
			e.c.Deliver(0)
			progress = true
		}
		if !progress {
			return nil
		}
	}
	return fmt.Errorf("stabilize: still going after 10000 rounds")
}
