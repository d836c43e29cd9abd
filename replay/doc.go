// Package replay shows what a tpcd node would recover from its event log,
// without starting the node and without writing anything: it is the logic
// behind `tpcd replay`.
//
// Run streams each node's log (logstore.Scan, one page at a time) through a
// fresh engine.Coordinator or engine.Participant using Apply only, exactly as
// a restarting node folds its log before its Start step, and reports per node
// the transactions the engine still holds (in-doubt ones first, with their
// last few events), how many transactions of each state the log holds, the
// violations recorded (part.violation events) and the events a restart could
// not decode or apply. Given a participant's data database, it also compares
// the log with pg_prepared_xacts and the tpcd_markers table, the two facts a
// participant's recovery reads: it runs the engine's own Start step (and a
// Tick) on the folded participant with those facts and classifies what the
// returned Ready would log and do, performing none of it, so its account of
// a restart follows the engine's rules instead of copying them (see
// docs/REPLAY.md for every category).
//
// Memory stays bounded whatever the length of the log: the engines forget a
// transaction when it ends, and so does the replay's own bookkeeping (a few
// events per transaction still in memory). Only transactions that have not
// ended cost memory, as they do in the node itself.
//
// A Report is the result; WriteText and WriteJSON render it. Report.Problems
// counts the inconsistencies, which `tpcd replay` turns into exit status 2.
package replay
