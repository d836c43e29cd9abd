package replay

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/logstore"
	"github.com/tpcd/tpcd/queries/dataqueries"
)

// maxConfirm bounds how many candidate problems are re-checked one by one.
const maxConfirm = 1000

// maxForeign bounds the foreign GIDs listed.
const maxForeign = 20

// facts is what a participant's recovery reads from its data database:
// its prepared transactions and its outcome markers.
type facts struct {
	// preparedGIDs, markerGIDs and tombstoneGIDs are every tpcd GID read,
	// as node hands them to the engine's Start step (the engine keeps its
	// own).
	preparedGIDs, markerGIDs, tombstoneGIDs []string
	// markerKeys are the idempotency keys stored with the markers, by GID.
	markerKeys map[string][]string
	// preparedXids are the transaction ids of preparedGIDs.
	preparedXids map[string]uint64
	// prepared and markers are this participant's (its cluster and node
	// id), by transaction id, for the report's counts and columns.
	prepared map[engine.TxID]string
	markers  map[engine.TxID]string
	foreign  []string
	foreignN int
}

// readFacts reads the facts of a participant's data database the way the
// participant does at start (node.recoveryFacts) and sorts out those that
// belong to participant id of cluster.
func readFacts(ctx context.Context, pool *pgxpool.Pool, cluster string, id engine.NodeID) (facts, error) {
	f := facts{prepared: map[engine.TxID]string{}, markers: map[engine.TxID]string{}}
	q := dataqueries.New()
	rows, err := q.PreparedList(ctx, pool)
	if err != nil {
		return f, fmt.Errorf("read pg_prepared_xacts: %w", err)
	}
	var prepared []string
	f.preparedXids = map[string]uint64{}
	for _, r := range rows {
		prepared = append(prepared, r.Gid)
		f.preparedXids[r.Gid] = uint64(r.Xid)
	}
	markerRows, err := q.MarkerList(ctx, pool)
	if err != nil {
		return f, fmt.Errorf("read markers: %w", explain(err, "tpcd_markers", "a tpcd participant's data database"))
	}
	var markers []string
	f.markerKeys = map[string][]string{}
	for _, r := range markerRows {
		markers = append(markers, r.Gid)
		if len(r.Keys) > 0 {
			f.markerKeys[r.Gid] = r.Keys
		}
	}
	tombstones, err := q.MarkerListTombstones(ctx, pool)
	if err != nil {
		return f, fmt.Errorf("read tombstones: %w", err)
	}
	f.preparedGIDs, f.markerGIDs, f.tombstoneGIDs = prepared, markers, tombstones
	sort := func(list []string, into map[engine.TxID]string) {
		for _, s := range list {
			g, ok := engine.ParseGID(s)
			if !ok || cluster == "" || g.Cluster != cluster || g.Node != id {
				f.foreignN++
				if len(f.foreign) < maxForeign {
					f.foreign = append(f.foreign, s)
				}
				continue
			}
			into[g.Tx] = s
		}
	}
	sort(f.preparedGIDs, f.prepared)
	sort(f.markerGIDs, f.markers)
	return f, nil
}

// of returns the GIDs that name transaction tx, whatever their cluster and
// node: the facts a start step of an engine that knows only tx needs.
func (f facts) of(tx engine.TxID) (prepared, markers []string) {
	pick := func(list []string) []string {
		var out []string
		for _, s := range list {
			if g, ok := engine.ParseGID(s); ok && g.Tx == tx {
				out = append(out, s)
			}
		}
		return out
	}
	return pick(f.preparedGIDs), pick(f.markerGIDs)
}

// logState is a transaction's state in a participant's log.
type logState struct {
	// phase is the engine's phase while it holds the transaction
	// ("prepared"), "committed" when its last event is part.committed, ""
	// otherwise.
	phase string
	gid   string
	// last is the kind of its last event when it is not in memory, "" if
	// the log has none.
	last string
	// committed: the log records the commit (part.committed, or the
	// part.forgotten of older logs).
	committed bool
}

func (s logState) String() string {
	switch {
	case s.phase != "":
		return s.phase
	case s.last != "":
		return "ended (" + s.last + ")"
	}
	return "no events"
}

// unlogged reports whether the log has no event of the transaction.
func (s logState) unlogged() bool { return s.phase == "" && s.last == "" }

// partConfig is the configuration of participant id's engine in replay:
// the node's own, as far as it matters to the fold and the start step.
// withStart says the start step will run: it consults the ids of the
// transactions the log shows finished, so the engine keeps as many as a
// node does (engine.DefaultRememberEnded); a fold without it keeps one, so
// memory follows the transactions in memory only.
func (r *runner) partConfig(id engine.NodeID, withStart bool) engine.ParticipantConfig {
	cfg := engine.ParticipantConfig{Node: id, LazyPrepared: r.opts.LazyPrepared}
	if !withStart {
		cfg.RememberAborted = 1
	}
	return cfg
}

// freshState reads one transaction's events now and folds them into a
// fresh engine of participant id in its cluster (rep): the newest state of
// that transaction in the log, and an engine ready for a start step that
// concerns that transaction alone.
func (r *runner) freshState(ctx context.Context, rep *NodeReport, id engine.NodeID, tx engine.TxID) (logState, *engine.Participant, error) {
	evs, err := r.readTx(ctx, rep.Node, uint64(tx))
	if err != nil {
		return logState{}, nil, err
	}
	eng := engine.NewParticipant(r.partConfig(id, true))
	if rep.Cluster != "" {
		// Node-level events are not the transaction's; this one makes the
		// engine know its GIDs from others'.
		_ = eng.Apply(engine.PartEpochSeen{Cluster: rep.Cluster, Epoch: engine.Epoch(rep.Epoch)})
	}
	var st logState
	for _, te := range evs {
		if te.ev != nil {
			_ = eng.Apply(te.ev) // a bad event is reported by the fold
		}
		if te.kind() == (engine.PartViolation{}).Kind() {
			continue // evidence, not state: the transaction stands where it was
		}
		st.last, st.phase = te.kind(), ""
		switch e := te.ev.(type) {
		case engine.PartCommitted:
			st.phase, st.gid, st.committed = "committed", e.GID, true
		case engine.PartForgotten:
			st.committed = true
		}
	}
	for _, s := range eng.Transactions() {
		if s.TxID == tx {
			st.phase, st.gid = s.Phase.String(), s.GID
		}
	}
	return st, eng, nil
}

// checkData compares participant id's log, folded into eng, with its data
// database: it runs the engine's start step on eng with the data
// database's facts and reports what the restart would do where the two do
// not simply agree. sums are the transactions eng held before the start.
func (r *runner) checkData(ctx context.Context, rep *NodeReport, id engine.NodeID, eng *engine.Participant, sums []engine.PartTxSummary, pool *pgxpool.Pool) error {
	fs, err := readFacts(ctx, pool, rep.Cluster, id)
	if err != nil {
		return fmt.Errorf("data database of %s: %w", rep.Node, err)
	}
	committed, err := dataqueries.New().CommittedOf(ctx, pool, eng.BranchXids())
	if err != nil {
		return fmt.Errorf("data database of %s: %w", rep.Node, err)
	}
	plans := planRestart(eng, engine.Start{PreparedGIDs: fs.preparedGIDs, Markers: fs.markerGIDs, MarkerKeys: fs.markerKeys, Tombstones: fs.tombstoneGIDs,
		PreparedXids: fs.preparedXids, CommittedXids: committed})
	rep.RestartNotes = plans.notes
	live := map[engine.TxID]logState{}
	for _, s := range sums {
		live[s.TxID] = logState{phase: s.Phase.String(), gid: s.GID}
	}
	var ids []engine.TxID
	for _, m := range []map[engine.TxID]string{fs.prepared, fs.markers} {
		ids = slices.AppendSeq(ids, maps.Keys(m))
	}
	ids = slices.AppendSeq(ids, maps.Keys(live))
	ids = slices.AppendSeq(ids, maps.Keys(plans.txs))
	slices.Sort(ids)
	ids = slices.Compact(ids)
	if r.opts.Tx != 0 {
		ids = slices.DeleteFunc(ids, func(tx engine.TxID) bool { return tx != r.opts.Tx })
	}
	dr := &DataReport{Prepared: len(fs.prepared), Markers: len(fs.markers), Foreign: fs.foreignN, ForeignGIDs: fs.foreign, Findings: []Finding{}}
	rep.Data = dr
	c := &checker{r: r, rep: rep, id: id}
	for _, tx := range ids {
		st, ok := live[tx]
		if !ok {
			if st, _, err = r.freshState(ctx, rep, id, tx); err != nil {
				return err
			}
		}
		fd, found, err := c.classify(ctx, tx, st, fs, plans.txs[tx])
		if err != nil {
			return err
		}
		if found {
			dr.Findings = append(dr.Findings, fd)
		}
	}
	if err := c.confirm(ctx, pool, dr); err != nil {
		return err
	}
	for i := range rep.Transactions {
		t := &rep.Transactions[i]
		p, m := fs.has(engine.TxID(t.Tx))
		t.PreparedInDB, t.MarkerInDB = &p, &m
		// In doubt is what the restart asks the coordinator about; it
		// settles the others by itself.
		pl := plans.txs[engine.TxID(t.Tx)]
		t.InDoubt = pl != nil && pl.inquires
	}
	return nil
}

func (f facts) has(tx engine.TxID) (prepared, marker bool) {
	_, prepared = f.prepared[tx]
	_, marker = f.markers[tx]
	return prepared, marker
}

// confirm re-reads the data database and the log of each candidate
// problem, runs the start step again for that transaction alone, and keeps
// what still holds. On a stopped participant nothing changes; on a running
// one, transactions that moved on while the log was being read (prepared
// and not yet logged, rolled back and not yet logged) drop out here
// instead of being reported as problems.
func (c *checker) confirm(ctx context.Context, pool *pgxpool.Pool, dr *DataReport) error {
	var cands []int
	for i, fd := range dr.Findings {
		if fd.Problem {
			cands = append(cands, i)
		}
	}
	if len(cands) == 0 {
		return nil
	}
	if len(cands) > maxConfirm {
		dr.Unconfirmed = true
		return nil
	}
	fs, err := readFacts(ctx, pool, c.rep.Cluster, c.id)
	if err != nil {
		return fmt.Errorf("data database of %s: %w", c.rep.Node, err)
	}
	drop := map[int]bool{}
	for _, i := range cands {
		tx := engine.TxID(dr.Findings[i].Tx)
		st, eng, err := c.r.freshState(ctx, c.rep, c.id, tx)
		if err != nil {
			return err
		}
		prepared, markers := fs.of(tx)
		committed, err := dataqueries.New().CommittedOf(ctx, pool, eng.BranchXids())
		if err != nil {
			return fmt.Errorf("data database of %s: %w", c.rep.Node, err)
		}
		in := engine.Start{PreparedGIDs: prepared, Markers: markers, PreparedXids: fs.preparedXids, CommittedXids: committed}
		fd, found, err := c.classify(ctx, tx, st, fs, planRestart(eng, in).txs[tx])
		if err != nil {
			return err
		}
		if found {
			dr.Findings[i] = fd
		} else {
			drop[i] = true
		}
	}
	keep := dr.Findings[:0]
	for i, fd := range dr.Findings {
		if !drop[i] {
			keep = append(keep, fd)
		}
	}
	dr.Findings = keep
	return nil
}

// checker classifies transactions of one participant.
type checker struct {
	r   *runner
	rep *NodeReport
	id  engine.NodeID
	// coordName caches the node name of the coordinator's log of this
	// participant's cluster in the same database ("" if there is none);
	// coordRead says it was looked up.
	coordName string
	coordRead bool
}

// errStop ends a Scan early.
var errStop = errors.New("stop")

// decision looks up the coordinator's decision on tx when the
// coordinator's log shares this database and names the same cluster.
// known is false when there is no such log. outcome is "" when the
// coordinator has no record of a decision (presumed abort).
func (c *checker) decision(ctx context.Context, tx engine.TxID) (outcome string, known bool, err error) {
	if !c.coordRead {
		c.coordRead = true
		// The coordinator's log of this participant's cluster: of the
		// slot whose cluster it is, where several coordinators share it.
		for _, name := range c.r.names {
			if role, _, ok := ParseNode(name); !ok || role != RoleCoordinator {
				continue
			}
			err := c.r.store.Scan(ctx, name, func(rec logstore.Record) error {
				if ev, err := engine.DecodeEvent(rec.Payload); err == nil {
					if s, ok := ev.(engine.CoordStarted); ok {
						if s.Cluster == c.rep.Cluster {
							c.coordName = name
						}
						return errStop
					}
				}
				return nil
			})
			if err != nil && !errors.Is(err, errStop) {
				return "", false, err
			}
			if c.coordName != "" {
				break
			}
		}
	}
	if c.coordName == "" {
		return "", false, nil
	}
	evs, err := c.r.readTx(ctx, c.coordName, uint64(tx))
	if err != nil {
		return "", false, err
	}
	for _, te := range evs {
		if d, ok := te.ev.(engine.CoordDecided); ok {
			outcome = d.Outcome.String()
		}
	}
	return outcome, true, nil
}

// classify turns what a restart does with one transaction (pl, read from
// the engine's start step; nil if it does nothing) into a finding, judged
// by what the log (st) and the data database (fs) show. found is false
// when the restart simply goes on (it asks about a transaction the log
// has prepared, or deletes the marker of one the log has committed) or
// does nothing. The restart decides the category; the evidence decides
// between categories of the same decision, and whether it is a problem.
// docs/REPLAY.md explains each category.
func (c *checker) classify(ctx context.Context, tx engine.TxID, st logState, fs facts, pl *restartPlan) (Finding, bool, error) {
	if pl == nil {
		pl = &restartPlan{}
	}
	prepared, marker := fs.has(tx)
	fd := Finding{Tx: uint64(tx), GID: st.gid, Log: st.String(), PreparedInDB: prepared, MarkerInDB: marker, Restart: pl.steps}
	if fd.GID == "" {
		fd.GID = fs.prepared[tx]
	}
	if fd.GID == "" {
		fd.GID = fs.markers[tx]
	}
	restart := "a restart " + pl.text(prepared)
	lazy := c.r.opts.LazyPrepared
	set := func(category string, problem bool, detail string) {
		fd.Category, fd.Problem, fd.Detail = category, problem, detail
	}
	switch {
	case pl.violation != "" && prepared && st.committed:
		set(FindingStillPrepared, true, "the log says committed, yet PostgreSQL still holds it prepared; "+restart+
			": check the coordinator's decision and COMMIT PREPARED it by hand")
	case pl.violation != "":
		set(FindingUnclassified, true, unclassified(restart, pl))
	case pl.logs(engine.PartPrepared{}):
		asks := ""
		if pl.inquires {
			asks = " (the coordinator aborts a vote it never counted)"
		}
		switch {
		case lazy && st.unlogged():
			set(FindingPreparedUnlogged, false, "prepared in PostgreSQL with no Prepared event yet; with lazy Prepared events the yes vote may have left before the event was written; "+restart)
		case st.unlogged():
			set(FindingOrphan, true, "prepared in PostgreSQL but the log has no event for it: it never voted yes (a crash between PREPARE TRANSACTION and the Prepared event) or it was prepared by hand; "+restart+asks+
				"; if the participant runs with lazy Prepared events, its default, replay without --no-lazy-prepared: then this is expected, not a problem")
		default:
			if pl.inquires {
				asks = " (the coordinator answers abort unless it decided commit)"
			}
			set(FindingOrphan, true, fmt.Sprintf("prepared in PostgreSQL although the log says it ended (%s); %s%s", st.last, restart, asks))
		}
	case pl.logs(engine.PartAborted{}):
		outcome, known, err := c.decision(ctx, tx)
		if err != nil {
			return fd, false, err
		}
		switch {
		case known && outcome == engine.OutcomeCommit.String():
			set(FindingMissing, true, "neither prepared nor committed in PostgreSQL (no marker, and its transaction id not committed), so it was rolled back here, but the coordinator's log decided commit: atomicity is broken; "+restart+
				", and the coordinator's commit, resent, then meets a rolled-back transaction (a violation)")
		case known:
			set(FindingAbortUnlogged, false, "rolled back in PostgreSQL (neither prepared nor committed) and the coordinator decided abort or has no decision (presumed abort); the abort is not logged yet; "+restart)
		default:
			set(FindingMissing, true, fmt.Sprintf("neither prepared nor committed in PostgreSQL, so it was rolled back, yet the log has no outcome: either a crash came between ROLLBACK PREPARED and the abort's log write, or it was rolled back by hand; if the coordinator decided commit, atomicity is broken; %s; check with: tpcd replay --node coordinator --tx %d on the coordinator's log", restart, tx))
		}
	case pl.logs(engine.PartCommitted{}):
		switch {
		case st.committed:
			// Committed in the log too long ago for a node to remember;
			// logging it again changes nothing.
			return fd, false, nil
		case st.phase == engine.PartPhasePrepared.String():
			set(FindingCommitUnlogged, false, "no longer prepared and committed (its transaction id in the commit log, or its marker); the outcome is not logged yet (a crash after COMMIT PREPARED); "+restart)
		case lazy && st.unlogged():
			set(FindingCommitUnlogged, false, "its marker is present, so it committed, and with lazy Prepared events none of its events may be logged yet; "+restart)
		case st.unlogged():
			set(FindingStrayMarker, true, "its marker is present, so it committed here, but the log has no event for it, which a participant without lazy Prepared events never leaves behind (events lost, or a log restored from an older backup?); "+restart)
		default:
			set(FindingStrayMarker, true, fmt.Sprintf("its marker is present, so it committed here, but the log says it ended (%s); %s", st.last, restart))
		}
	case pl.runs(engine.DataDeleteMarker) && st.last == (engine.PartForgotten{}).Kind():
		// Logs of earlier builds wrote part.forgotten once the marker was
		// gone.
		set(FindingStrayMarker, true, fmt.Sprintf("its marker is present although the log says it was deleted (%s): inserted again by hand, or a data database restored from an older backup; %s", st.last, restart))
	case pl.runs(engine.DataDeleteMarker) && st.committed && len(pl.logged) == 0:
		return fd, false, nil // committed; the marker awaits deletion
	case pl.inquires && st.phase == engine.PartPhasePrepared.String() && len(pl.logged) == 0 && len(pl.ops) == 0:
		return fd, false, nil // in doubt, as it should be
	case len(pl.steps) == 0:
		return fd, false, nil
	default:
		set(FindingUnclassified, true, unclassified(restart, pl))
	}
	return fd, true, nil
}

// unclassified is the detail of a finding replay has no category for: the
// engine's start step does something with the transaction that no
// category describes (an engine newer than replay's classification?).
func unclassified(restart string, pl *restartPlan) string {
	return fmt.Sprintf("replay has no category for what a restart does with it; %s: %s", restart, strings.Join(pl.steps, "; "))
}
