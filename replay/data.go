package replay

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/logstore"
	"github.com/tpcd/tpcd/node"
	"github.com/tpcd/tpcd/queries/dataqueries"
)

// maxConfirm bounds how many candidate problems are re-checked one by one.
const maxConfirm = 1000

// maxForeign bounds the foreign GIDs listed.
const maxForeign = 20

// facts is what a participant's recovery reads from its data database:
// its prepared transactions and its outcome markers, by transaction id.
type facts struct {
	prepared map[engine.TxID]string
	markers  map[engine.TxID]string
	foreign  []string
	foreignN int
}

// readFacts reads the facts that belong to participant id of cluster,
// the same way the participant does at start (node.recoveryFacts).
func readFacts(ctx context.Context, pool *pgxpool.Pool, cluster string, id engine.NodeID) (facts, error) {
	f := facts{prepared: map[engine.TxID]string{}, markers: map[engine.TxID]string{}}
	q := dataqueries.New()
	prepared, err := q.PreparedListGIDs(ctx, pool)
	if err != nil {
		return f, fmt.Errorf("read pg_prepared_xacts: %w", err)
	}
	markers, err := q.MarkerListGIDs(ctx, pool)
	if err != nil {
		return f, fmt.Errorf("read markers: %w", explain(err, "tpcd_markers", "a tpcd participant's data database"))
	}
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
	sort(prepared, f.prepared)
	sort(markers, f.markers)
	return f, nil
}

// logState is a transaction's state in a participant's log.
type logState struct {
	// phase is "prepared" while the engine holds the transaction,
	// "committed" when its last event is part.committed, "" otherwise.
	phase string
	gid   string
	// last is the kind of its last event when it is not in memory, "" if
	// the log has none.
	last string
	// committed: the log records the commit (part.committed, or the
	// part.forgotten of older logs), which a restart remembers.
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

// freshState reads one transaction's events now and folds them into a
// fresh engine: the newest state of that transaction in the log.
func (r *runner) freshState(ctx context.Context, name string, tx engine.TxID) (logState, error) {
	recs, err := r.store.TxEvents(ctx, name, uint64(tx))
	if err != nil {
		return logState{}, err
	}
	eng := engine.NewParticipant(engine.ParticipantConfig{RememberAborted: 1})
	var st logState
	for _, rec := range recs {
		if rec.Kind == (engine.PartViolation{}).Kind() {
			continue // evidence, not state: the transaction stands where it was
		}
		st.last, st.phase = rec.Kind, ""
		if ev, err := engine.DecodeEvent(rec.Payload); err == nil {
			_ = eng.Apply(ev) // a bad event is reported by the fold
			switch e := ev.(type) {
			case engine.PartCommitted:
				st.phase, st.gid, st.committed = "committed", e.GID, true
			case engine.PartForgotten:
				st.committed = true
			}
		}
	}
	for _, s := range eng.Transactions() {
		if s.TxID == tx {
			st.phase, st.gid = s.Phase.String(), s.GID
		}
	}
	return st, nil
}

// checkData compares participant id's log with its data database.
func (r *runner) checkData(ctx context.Context, rep *NodeReport, id engine.NodeID, sums []engine.PartTxSummary, pool *pgxpool.Pool) error {
	fs, err := readFacts(ctx, pool, rep.Cluster, id)
	if err != nil {
		return fmt.Errorf("data database of %s: %w", rep.Node, err)
	}
	live := map[engine.TxID]logState{}
	for _, s := range sums {
		live[s.TxID] = logState{phase: s.Phase.String(), gid: s.GID}
	}
	var ids []engine.TxID
	for _, m := range []map[engine.TxID]string{fs.prepared, fs.markers} {
		for tx := range m {
			if _, ok := live[tx]; !ok {
				ids = append(ids, tx)
			}
		}
	}
	for tx := range live {
		ids = append(ids, tx)
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	if r.opts.Tx != 0 {
		ids = slices.DeleteFunc(ids, func(tx engine.TxID) bool { return tx != r.opts.Tx })
	}
	dr := &DataReport{Prepared: len(fs.prepared), Markers: len(fs.markers), Foreign: fs.foreignN, ForeignGIDs: fs.foreign, Findings: []Finding{}}
	rep.Data = dr
	c := &checker{r: r, rep: rep}
	for _, tx := range ids {
		st, ok := live[tx]
		if !ok {
			if st, err = r.freshState(ctx, rep.Node, tx); err != nil {
				return err
			}
		}
		fd, found, err := c.classify(ctx, tx, st, fs)
		if err != nil {
			return err
		}
		if found {
			dr.Findings = append(dr.Findings, fd)
		}
	}
	if err := c.confirm(ctx, id, pool, dr); err != nil {
		return err
	}
	for i := range rep.Transactions {
		t := &rep.Transactions[i]
		p, m := fs.has(engine.TxID(t.Tx))
		t.PreparedInDB, t.MarkerInDB = &p, &m
		// Only a transaction still prepared waits for the coordinator; a
		// restart settles one that is not from its marker.
		t.InDoubt = t.InDoubt && p
	}
	return nil
}

func (f facts) has(tx engine.TxID) (prepared, marker bool) {
	_, prepared = f.prepared[tx]
	_, marker = f.markers[tx]
	return prepared, marker
}

// confirm re-reads the data database and the log of each candidate
// problem and keeps what still holds. On a stopped participant nothing
// changes; on a running one, transactions that moved on while the log was
// being read (prepared and not yet logged, rolled back and not yet logged)
// drop out here instead of being reported as problems.
func (c *checker) confirm(ctx context.Context, id engine.NodeID, pool *pgxpool.Pool, dr *DataReport) error {
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
	fs, err := readFacts(ctx, pool, c.rep.Cluster, id)
	if err != nil {
		return fmt.Errorf("data database of %s: %w", c.rep.Node, err)
	}
	drop := map[int]bool{}
	for _, i := range cands {
		tx := engine.TxID(dr.Findings[i].Tx)
		st, err := c.r.freshState(ctx, c.rep.Node, tx)
		if err != nil {
			return err
		}
		fd, found, err := c.classify(ctx, tx, st, fs)
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
	// coordCluster caches the cluster of the coordinator's log in the same
	// database ("" if there is none); coordRead says it was looked up.
	coordCluster string
	coordRead    bool
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
		if slices.Contains(c.r.names, node.CoordinatorName) {
			err := c.r.store.Scan(ctx, node.CoordinatorName, func(rec logstore.Record) error {
				if ev, err := engine.DecodeEvent(rec.Payload); err == nil {
					if s, ok := ev.(engine.CoordStarted); ok {
						c.coordCluster = s.Cluster
						return errStop
					}
				}
				return nil
			})
			if err != nil && !errors.Is(err, errStop) {
				return "", false, err
			}
		}
	}
	if c.coordCluster == "" || c.coordCluster != c.rep.Cluster {
		return "", false, nil
	}
	recs, err := c.r.store.TxEvents(ctx, node.CoordinatorName, uint64(tx))
	if err != nil {
		return "", false, err
	}
	for _, rec := range recs {
		if ev, err := engine.DecodeEvent(rec.Payload); err == nil {
			if d, ok := ev.(engine.CoordDecided); ok {
				outcome = d.Outcome.String()
			}
		}
	}
	return outcome, true, nil
}

// classify compares one transaction's log state with the data database.
// found is false when the two simply agree (in doubt and still prepared,
// committed with its marker awaiting deletion) or when neither knows it.
// The categories and what a restart does are documented in docs/REPLAY.md;
// the restart behaviour quoted here is engine.Participant's start step.
func (c *checker) classify(ctx context.Context, tx engine.TxID, st logState, fs facts) (Finding, bool, error) {
	prepared, marker := fs.has(tx)
	fd := Finding{Tx: uint64(tx), GID: st.gid, Log: st.String(), PreparedInDB: prepared, MarkerInDB: marker}
	if fd.GID == "" {
		fd.GID = fs.prepared[tx]
	}
	if fd.GID == "" {
		fd.GID = fs.markers[tx]
	}
	lazy := c.r.opts.LazyPrepared
	switch {
	case st.phase == "prepared" && prepared:
		return fd, false, nil // in doubt, as it should be
	case st.phase == "prepared" && marker:
		fd.Category = FindingCommitUnlogged
		fd.Detail = "no longer prepared and its marker is present, so it committed; the outcome is not logged yet (a crash after COMMIT PREPARED); a restart logs the commit and deletes the marker"
	case st.phase == "prepared":
		outcome, known, err := c.decision(ctx, tx)
		if err != nil {
			return fd, false, err
		}
		switch {
		case known && outcome == engine.OutcomeCommit.String():
			fd.Category, fd.Problem = FindingMissing, true
			fd.Detail = "neither prepared nor marked in PostgreSQL, so it was rolled back here, but the coordinator's log decided commit: atomicity is broken (a restart records a violation)"
		case known:
			fd.Category = FindingAbortUnlogged
			fd.Detail = "rolled back in PostgreSQL (neither prepared nor marked) and the coordinator decided abort or has no decision (presumed abort); the abort is not logged yet; a restart logs it"
		default:
			fd.Category, fd.Problem = FindingMissing, true
			fd.Detail = fmt.Sprintf("neither prepared nor marked in PostgreSQL, so it was rolled back, yet the log has no outcome: either a crash came between ROLLBACK PREPARED and the abort's log write (a restart logs the abort), or it was rolled back by hand; if the coordinator decided commit, atomicity is broken; check with: tpcd replay --node coordinator --tx %d on the coordinator's log", tx)
		}
	case st.phase == "committed" && prepared:
		fd.Category, fd.Problem = FindingStillPrepared, true
		fd.Detail = "the log says committed, yet PostgreSQL still holds it prepared; a restart leaves it prepared and logs a violation: check the coordinator's decision and COMMIT PREPARED it by hand"
	case st.phase == "committed":
		return fd, false, nil // ended; its marker may still await deletion
	case prepared && lazy && st.last == "":
		fd.Category = FindingPreparedUnlogged
		fd.Detail = "prepared in PostgreSQL with no Prepared event yet; with lazy Prepared events the yes vote may have left, so a restart treats it as in doubt and asks the coordinator"
	case prepared && st.last == "":
		fd.Category, fd.Problem = FindingOrphan, true
		fd.Detail = "prepared in PostgreSQL but the log has no event for it: it never voted yes (a crash between PREPARE TRANSACTION and the Prepared event) or it was prepared by hand; a restart logs it as prepared and asks the coordinator, which aborts a vote it never counted (if the participant runs with lazy Prepared events, its default, replay without --no-lazy-prepared: then this is expected, not a problem)"
	case prepared:
		fd.Category, fd.Problem = FindingOrphan, true
		fd.Detail = fmt.Sprintf("prepared in PostgreSQL although the log says it ended (%s); a restart logs it as prepared again and asks the coordinator, which answers abort unless it decided commit", st.last)
		if st.committed {
			fd.Detail = fmt.Sprintf("prepared in PostgreSQL although the log says it ended committed (%s); a restart leaves it prepared and logs a violation: check the coordinator's decision and COMMIT PREPARED it by hand", st.last)
		}
	case marker && lazy && st.last == "":
		fd.Category = FindingCommitUnlogged
		fd.Detail = "its marker is present, so it committed, and with lazy Prepared events none of its events may be logged yet; a restart logs the commit and deletes the marker"
	case marker && st.last == "":
		fd.Category, fd.Problem = FindingStrayMarker, true
		fd.Detail = "its marker is present, so it committed here, but the log has no event for it, which a participant without lazy Prepared events never leaves behind (events lost, or a log restored from an older backup?); a restart logs it as committed"
	case marker:
		fd.Category, fd.Problem = FindingStrayMarker, true
		fd.Detail = fmt.Sprintf("its marker is present, so it committed here, but the log says it ended (%s); a restart logs it as committed", st.last)
		if st.committed {
			fd.Detail = fmt.Sprintf("its marker is present although the log says it was deleted (%s): inserted again by hand, or a data database restored from an older backup; a restart deletes it", st.last)
		}
	default:
		return fd, false, nil
	}
	return fd, true, nil
}
