package replay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/db"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/logstore"
)

// DefaultEvents is how many of its last events each listed transaction shows.
const DefaultEvents = 3

// Options say what Run replays.
type Options struct {
	// Log is the log database; Run only reads it.
	Log *pgxpool.Pool
	// Data is a participant's data database to compare the log with, or nil.
	Data *pgxpool.Pool
	// Node restricts the replay to one node ("coordinator",
	// "participant-N"). With Data it names the participant the data
	// database belongs to; without it, the log must hold exactly one
	// participant.
	Node string
	// Tx restricts the report to one transaction and lists all its events.
	Tx engine.TxID
	// Participants is the coordinator's participant count; 0 infers it from
	// the log (highest node id named + 1).
	Participants int
	// Events is how many of its last events a listed transaction shows:
	// 0 means DefaultEvents, negative none.
	Events int
	// Limit bounds the transactions listed per node; 0 lists them all.
	// Counts always cover every transaction.
	Limit int
	// Times adds when each listed event was stored.
	Times bool
	// LazyPrepared says the participant runs with lazy Prepared events, so
	// a prepared GID (or a marker) the log does not know yet is in doubt
	// rather than an orphan. The participant's engine is configured with
	// it too, as the node's is.
	LazyPrepared bool
	Logger       *slog.Logger
}

// Connect opens a small pool for replay. Every session is read-only, so
// nothing Run does can change a log or a data database.
func Connect(ctx context.Context, uri string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(uri)
	if err != nil {
		return nil, fmt.Errorf("parse %s: malformed connection string", db.Redact(uri))
	}
	cfg.MaxConns = 2
	cfg.ConnConfig.RuntimeParams["default_transaction_read_only"] = "on"
	cfg.ConnConfig.RuntimeParams["application_name"] = "tpcd replay"
	return db.OpenPool(ctx, cfg)
}

// ParseNode splits a node name of the log into its role and participant id.
// A name may end in a slot (".N", package api's "Slots"): that slot's
// coordinator, or the participant's engine for it.
func ParseNode(name string) (role string, id engine.NodeID, ok bool) {
	base, slot := name, 0
	if i := strings.LastIndexByte(name, '.'); i >= 0 {
		n, err := strconv.Atoi(name[i+1:])
		if err != nil || n < 1 || n >= api.MaxSlots {
			return "", 0, false
		}
		base, slot = name[:i], n
	}
	if base == api.CoordinatorName {
		return RoleCoordinator, engine.CoordinatorNode, api.CoordinatorSlotName(slot) == name
	}
	rest, found := strings.CutPrefix(base, "participant-")
	if !found {
		return "", 0, false
	}
	n, err := strconv.Atoi(rest)
	if err != nil || n < 0 || api.ParticipantSlotName(engine.NodeID(n), slot) != name {
		return "", 0, false
	}
	return RoleParticipant, engine.NodeID(n), true
}

// partLog is a participant's log: its id and node name (one per slot).
type partLog struct {
	id   engine.NodeID
	name string
}

type runner struct {
	opts  Options
	store *logstore.Store
	log   *slog.Logger
	names []string
	keep  int
}

// Run replays the log and, with Options.Data, checks it against the data
// database. An error means the replay could not be done (connection,
// missing tables, bad options); what is wrong in the log is in the Report.
func Run(ctx context.Context, opts Options) (*Report, error) {
	if opts.Log == nil {
		return nil, errors.New("replay: no log database")
	}
	r := &runner{opts: opts, store: logstore.New(opts.Log), log: opts.Logger, keep: opts.Events}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.keep == 0 {
		r.keep = DefaultEvents
	}
	if opts.Participants < 0 {
		return nil, fmt.Errorf("participants %d: must not be negative", opts.Participants)
	}
	var err error
	if r.names, err = r.store.Nodes(ctx); err != nil {
		return nil, explain(err, "tpcd_log", "a tpcd log database")
	}

	rep := &Report{Tx: uint64(opts.Tx), Nodes: []NodeReport{}}
	// The node names in the log, coordinators' (one per slot) and
	// participants' (one per participant and slot), in the log's order.
	var coords []string
	var parts []partLog
	for _, n := range r.names {
		role, id, ok := ParseNode(n)
		switch {
		case !ok:
			rep.Notes = append(rep.Notes, fmt.Sprintf("node %q is not a tpcd node name; its events were not replayed", n))
		case role == RoleCoordinator:
			coords = append(coords, n)
		default:
			parts = append(parts, partLog{id: id, name: n})
		}
	}
	slices.SortStableFunc(parts, func(a, b partLog) int { return int(a.id) - int(b.id) })

	dataNode := engine.CoordinatorNode
	if opts.Node != "" {
		role, id, ok := ParseNode(opts.Node)
		if !ok {
			return nil, fmt.Errorf("node %q: want coordinator or participant-N", opts.Node)
		}
		if !slices.Contains(r.names, opts.Node) {
			return nil, fmt.Errorf("node %s has no events in this log (nodes here: %s)", opts.Node, listOr(r.names, "none"))
		}
		if opts.Data != nil && role != RoleParticipant {
			return nil, fmt.Errorf("a data database belongs to a participant, not to the %s", opts.Node)
		}
		coords, parts = nil, nil
		if role == RoleCoordinator {
			coords = []string{opts.Node}
		} else {
			parts = []partLog{{id: id, name: opts.Node}}
		}
		dataNode = id
	} else if opts.Data != nil {
		ids := map[engine.NodeID]bool{}
		for _, p := range parts {
			ids[p.id] = true
		}
		if len(ids) != 1 {
			return nil, fmt.Errorf("the log holds %d participants (%s); name the data database's owner with the node option", len(ids), listOr(r.names, "none"))
		}
		dataNode = parts[0].id
	}

	for _, name := range coords {
		nr, err := r.coordinator(ctx, name)
		if err != nil {
			return nil, err
		}
		rep.Nodes = append(rep.Nodes, *nr)
	}
	for _, p := range parts {
		var data *pgxpool.Pool
		if opts.Data != nil && p.id == dataNode {
			data = opts.Data
		}
		nr, err := r.participant(ctx, p.id, p.name, data)
		if err != nil {
			return nil, err
		}
		rep.Nodes = append(rep.Nodes, *nr)
	}
	for _, n := range rep.Nodes {
		rep.Problems += n.Problems
	}
	return rep, nil
}

// explain turns "relation does not exist" into a message that says which
// kind of database was expected.
func explain(err error, table, what string) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" {
		return fmt.Errorf("no %s table: not %s, or never migrated: %w", table, what, err)
	}
	return err
}

func listOr(xs []string, none string) string {
	if len(xs) == 0 {
		return none
	}
	return strings.Join(xs, ", ")
}

// coordinator folds the coordinator's log. Its engine must know the number
// of participants before the first event; unless told, replay starts with
// the participants that have logs here and, if an event names a higher id,
// reads the log once for the highest id and folds again.
func (r *runner) coordinator(ctx context.Context, name string) (*NodeReport, error) {
	n, inferred := r.opts.Participants, r.opts.Participants == 0
	if inferred {
		n = 1
		for _, name := range r.names {
			if role, id, ok := ParseNode(name); ok && role == RoleParticipant {
				n = max(n, int(id)+1)
			}
		}
	}
	for attempt := 0; ; attempt++ {
		rep := &NodeReport{Node: name, Role: RoleCoordinator}
		f := newCoordFold(rep, r.keep, r.opts.Tx, n, inferred)
		err := r.store.Scan(ctx, name, func(rec logstore.Record) error { return f.step(f, rec) })
		if err == nil {
			return r.coordReport(ctx, name, f)
		}
		if !errors.Is(err, errRefold) || attempt >= 2 {
			return nil, fmt.Errorf("replay %s: %w", name, err)
		}
		r.log.Debug("an event names a participant beyond the guess; reading the log for the highest id", "guess", n, "needed", f.need)
		if n, err = r.highestParticipant(ctx, name); err != nil {
			return nil, err
		}
		n = max(n, f.need)
	}
}

// highestParticipant reads the coordinator's log for the number of
// participants its events name, decoding only the lists of nodes.
func (r *runner) highestParticipant(ctx context.Context, name string) (int, error) {
	n := 1
	err := r.store.Scan(ctx, name, func(rec logstore.Record) error {
		var env struct {
			Type string `json:"type"`
			Data struct {
				Participants []int `json:"participants"`
			} `json:"data"`
		}
		if json.Unmarshal(rec.Payload, &env) != nil {
			return nil // the fold reports it
		}
		if env.Type != (engine.CoordPreparing{}).Kind() && env.Type != (engine.CoordDecided{}).Kind() {
			return nil
		}
		for _, p := range env.Data.Participants {
			n = max(n, p+1)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("replay %s: count participants: %w", name, err)
	}
	return n, nil
}

func (r *runner) coordReport(ctx context.Context, name string, f *coordFold) (*NodeReport, error) {
	rep := f.rep
	rep.Cluster, rep.Epoch = f.eng.Cluster(), uint64(f.eng.Epoch())
	f.facts.NextTx = max(f.facts.ReservedThrough, f.facts.HighestTx) + 1
	if f.facts.Inferred {
		f.facts.Participants = f.named
	}
	rep.Coordinator = &f.facts
	rep.States = f.states
	sums := f.eng.Transactions()
	rep.InMemory = len(sums)
	for _, s := range sums {
		f.states[s.State]++
	}
	txr := func(s engine.TxSummary) TxReport {
		t := TxReport{
			Tx: uint64(s.TxID), State: s.State, InDoubt: s.State == "preparing", Epoch: uint64(s.Epoch),
			Participants: nodeInts(s.Participants), Pending: nodeInts(s.Pending), Reason: s.Reason,
		}
		if s.Outcome != 0 {
			t.Outcome = s.Outcome.String()
		}
		return t
	}
	missing := TxReport{Tx: uint64(r.opts.Tx), State: "no events", Reason: "not handed out yet"}
	if uint64(r.opts.Tx) < f.facts.NextTx {
		missing.Reason = "ended and compacted, or aborted before anything was logged (presumed abort)"
	}
	ended := func(state string) bool { return !coordLive(state) }
	if err := listTxs(ctx, r, name, rep, f.tr, sums, txr, missing, ended); err != nil {
		return nil, err
	}
	if r.opts.Tx == 0 {
		r.limit(rep)
	}
	rep.Problems = len(rep.Undecodable) + rep.UndecodableOmitted
	return rep, nil
}

// listTxs fills rep.Transactions from the engine's summaries, made into
// reports by txr. With Options.Tx it lists that transaction alone with all
// its events: as missing says when the engine no longer holds it, and in
// the state the log left it in when ended says that state ended it.
// Otherwise it lists every transaction the engine holds, with the events
// the fold kept of each.
func listTxs[S any](ctx context.Context, r *runner, name string, rep *NodeReport, tr *tracker, sums []S, txr func(S) TxReport, missing TxReport, ended func(state string) bool) error {
	if r.opts.Tx == 0 {
		for _, s := range sums {
			t := txr(s)
			t.Events, t.EarlierEvents = refs(tr.txs[engine.TxID(t.Tx)], r.opts.Times)
			rep.Transactions = append(rep.Transactions, t)
		}
		return nil
	}
	t := missing
	for _, s := range sums {
		if st := txr(s); st.Tx == uint64(r.opts.Tx) {
			t = st
		}
	}
	if tt := tr.txs[r.opts.Tx]; tt != nil && ended(tt.state) {
		t.State = tt.state
	}
	if err := r.txEvents(ctx, name, &t); err != nil {
		return err
	}
	rep.Transactions = []TxReport{t}
	return nil
}

// limit sorts the listing and cuts it to Options.Limit.
func (r *runner) limit(rep *NodeReport) {
	if rep.Transactions == nil {
		rep.Transactions = []TxReport{}
	}
	sortTxs(rep.Transactions)
	if r.opts.Limit > 0 && len(rep.Transactions) > r.opts.Limit {
		rep.Omitted = len(rep.Transactions) - r.opts.Limit
		rep.Transactions = rep.Transactions[:r.opts.Limit]
	}
}

// txEvents reads all of one transaction's events for a --tx report and
// completes t with what they say about an ended transaction.
func (r *runner) txEvents(ctx context.Context, name string, t *TxReport) error {
	evs, err := r.readTx(ctx, name, t.Tx)
	if err != nil {
		return err
	}
	t.Events = make([]EventReport, 0, len(evs))
	for _, te := range evs {
		ev := te.ev
		if ev == nil {
			t.Events = append(t.Events, eventReport(te.Pos, te.kind(), "(undecodable)", te.At, r.opts.Times))
			continue
		}
		t.Events = append(t.Events, eventReport(te.Pos, te.kind(), engine.DescribeEvent(ev), te.At, r.opts.Times))
		switch e := ev.(type) {
		case engine.CoordDecided:
			t.Outcome, t.Reason = e.Outcome.String(), e.Reason
			if t.Epoch == 0 {
				t.Epoch = uint64(e.Epoch)
			}
		case engine.PartAborted:
			t.Outcome, t.Reason = engine.OutcomeAbort.String(), e.Reason
		case engine.PartCommitted:
			t.Outcome = engine.OutcomeCommit.String()
		case engine.PartVotedNo:
			t.Reason = e.Reason
		}
		if gid := eventGID(ev); gid != "" && t.GID == "" {
			t.GID = gid
			if g, ok := engine.ParseGID(gid); ok {
				t.Epoch = uint64(g.Epoch)
			}
		}
	}
	return nil
}

func eventGID(ev engine.Event) string {
	switch e := ev.(type) {
	case engine.PartPrepared:
		return e.GID
	case engine.PartCommitted:
		return e.GID
	case engine.PartAborted:
		return e.GID
	}
	return ""
}

// participant folds participant id's log and, given its data database,
// compares the two.
func (r *runner) participant(ctx context.Context, id engine.NodeID, name string, data *pgxpool.Pool) (*NodeReport, error) {
	nid := int(id)
	rep := &NodeReport{Node: name, Role: RoleParticipant, ID: &nid}
	f := newPartFold(rep, r.keep, r.opts.Tx, r.partConfig(id, data != nil))
	if err := r.store.Scan(ctx, name, func(rec logstore.Record) error { return f.step(f, rec) }); err != nil {
		return nil, fmt.Errorf("replay %s: %w", name, err)
	}
	rep.Cluster, rep.Epoch = f.eng.Cluster(), uint64(f.eng.Epoch())
	rep.States = f.states
	sums := f.eng.Transactions()
	rep.InMemory = len(sums)
	for _, s := range sums {
		f.states[s.Phase.String()]++
	}
	txr := func(s engine.PartTxSummary) TxReport {
		t := TxReport{Tx: uint64(s.TxID), State: s.Phase.String(), InDoubt: s.Phase == engine.PartPhasePrepared, GID: s.GID, Reason: s.Reason}
		if g, ok := engine.ParseGID(s.GID); ok {
			t.Epoch = uint64(g.Epoch)
		}
		return t
	}
	missing := TxReport{Tx: uint64(r.opts.Tx), State: "no events", Reason: "never prepared here, or ended and compacted"}
	ended := func(state string) bool { return state != "" && !partLive(state) }
	if err := listTxs(ctx, r, name, rep, f.tr, sums, txr, missing, ended); err != nil {
		return nil, err
	}
	if data != nil {
		if err := r.checkData(ctx, rep, id, f.eng, sums, data); err != nil {
			return nil, err
		}
	}
	if r.opts.Tx == 0 {
		r.limit(rep)
	}
	rep.Problems = len(rep.Violations) + rep.ViolationsOmitted + len(rep.Undecodable) + rep.UndecodableOmitted
	if rep.Data != nil {
		for _, fd := range rep.Data.Findings {
			if fd.Problem {
				rep.Problems++
			}
		}
	}
	return rep, nil
}
