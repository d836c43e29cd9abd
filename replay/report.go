package replay

import "time"

// Report is what Run found in a log. It is also the structure of the JSON
// output (docs/REPLAY.md documents every field); fields are only ever added.
type Report struct {
	// Nodes are the nodes replayed, coordinator first, then participants
	// by id.
	Nodes []NodeReport `json:"nodes"`
	// Tx is the transaction the report is restricted to (--tx), 0 for all.
	Tx uint64 `json:"tx,omitempty"`
	// Problems counts the inconsistencies of all nodes: violations,
	// undecodable events and data-database mismatches marked as problems.
	Problems int `json:"problems"`
	// Notes are remarks about the log as a whole (skipped nodes, ...).
	Notes []string `json:"notes,omitempty"`
}

// Consistent reports whether the replay found nothing wrong.
func (r *Report) Consistent() bool { return r.Problems == 0 }

// Roles of a node.
const (
	RoleCoordinator = "coordinator"
	RoleParticipant = "participant"
)

// NodeReport is the state recovered from one node's log.
type NodeReport struct {
	// Node is the node's name in the log ("coordinator", "participant-N").
	Node string `json:"node"`
	// Role is RoleCoordinator or RoleParticipant.
	Role string `json:"role"`
	// ID is a participant's node id.
	ID *int `json:"id,omitempty"`
	// Cluster and Epoch are the cluster id and newest coordinator
	// incarnation the log names ("" and 0 if it names none).
	Cluster string `json:"cluster"`
	Epoch   uint64 `json:"epoch"`
	// Events is how many events were read.
	Events int64 `json:"events"`
	// Coordinator holds what only a coordinator's log says.
	Coordinator *CoordinatorFacts `json:"coordinator,omitempty"`
	// States counts transactions by state. Coordinator: preparing,
	// committing and aborting are in memory; committed and aborted ended
	// but their events are still in the log (not compacted yet).
	// Participant: prepared is in memory; committed and aborted ended and
	// await compaction (a committed one's marker may still await deletion).
	States map[string]int `json:"states"`
	// InMemory is how many transactions the engine holds after the fold.
	InMemory int `json:"in_memory"`
	// Transactions lists them, in-doubt first, then by id (at most
	// Options.Limit; Omitted says how many more). With Options.Tx it holds
	// that transaction alone, whatever its state, with all its events.
	Transactions []TxReport `json:"transactions"`
	Omitted      int        `json:"omitted,omitempty"`
	// Violations are the part.violation events (participants only).
	Violations []ViolationReport `json:"violations,omitempty"`
	// ViolationsOmitted counts violations beyond the ones listed.
	ViolationsOmitted int `json:"violations_omitted,omitempty"`
	// Undecodable are events a restart of the node would choke on.
	Undecodable []BadEvent `json:"undecodable,omitempty"`
	// UndecodableOmitted counts bad events beyond the ones listed.
	UndecodableOmitted int `json:"undecodable_omitted,omitempty"`
	// Data is the comparison with the participant's data database, when
	// one was given.
	Data *DataReport `json:"data,omitempty"`
	// RestartNotes are what a restart of the participant would tell its
	// operator beyond single transactions (the Warning effects of the
	// engine's start step), and any effect of that step replay cannot tie
	// to a transaction; only with a data database.
	RestartNotes []string `json:"restart_notes,omitempty"`
	// Problems counts this node's inconsistencies.
	Problems int `json:"problems"`
}

// CoordinatorFacts are the node-level facts of a coordinator's log.
type CoordinatorFacts struct {
	// Incarnations counts coord.started events: how many times it started.
	Incarnations int `json:"incarnations"`
	// ReservedThrough is the highest transaction id reserved.
	ReservedThrough uint64 `json:"reserved_through"`
	// HighestTx is the highest transaction id in the log's events.
	HighestTx uint64 `json:"highest_tx"`
	// NextTx is the first id a restarted coordinator would hand out.
	NextTx uint64 `json:"next_tx"`
	// Participants is the coordinator's participant count: the one given
	// in Options.Participants or, when Inferred, the highest participant
	// id its events name plus one (0 when they name none).
	Participants int  `json:"participants"`
	Inferred     bool `json:"participants_inferred"`
}

// TxReport is one transaction as the log leaves it.
type TxReport struct {
	Tx    uint64 `json:"tx"`
	State string `json:"state"`
	// InDoubt marks a transaction waiting for a decision: at the
	// coordinator, one still preparing (a restart aborts it); at a
	// participant, one prepared without an outcome (a restart asks the
	// coordinator) and, given the data database, one the engine's start
	// step leaves prepared and asks the coordinator about.
	InDoubt bool   `json:"in_doubt"`
	Epoch   uint64 `json:"epoch,omitempty"`
	// GID is the participant's prepared-transaction name.
	GID string `json:"gid,omitempty"`
	// Participants and Pending (coordinator): the nodes the transaction
	// touched, and those that have not acknowledged the decision in the log.
	Participants []int  `json:"participants,omitempty"`
	Pending      []int  `json:"pending,omitempty"`
	Outcome      string `json:"outcome,omitempty"`
	Reason       string `json:"reason,omitempty"`
	// PreparedInDB and MarkerInDB are what the data database says about
	// this transaction's GID (only with a data database).
	PreparedInDB *bool `json:"prepared_in_db,omitempty"`
	MarkerInDB   *bool `json:"marker_in_db,omitempty"`
	// Events are the transaction's last events in log order; EarlierEvents
	// counts those before them that are not shown.
	Events        []EventReport `json:"events"`
	EarlierEvents int           `json:"earlier_events,omitempty"`
}

// EventReport is one event of the log. Seq is the row holding it (the events
// of one append share a row) and Index its place in the row, from 0.
type EventReport struct {
	Seq   int64  `json:"seq"`
	Index int    `json:"index"`
	Kind  string `json:"kind"`
	// Text is the event rendered by engine.DescribeEvent.
	Text string `json:"text"`
	// At is when the log stored it (only with Options.Times).
	At *time.Time `json:"at,omitempty"`
}

// ViolationReport is one part.violation event.
type ViolationReport struct {
	Tx     uint64 `json:"tx"`
	Seq    int64  `json:"seq"`
	Index  int    `json:"index"`
	Detail string `json:"detail"`
}

// BadEvent is an event that does not decode, or that the engine refuses to
// apply: the node's recovery stops at it, so the node cannot restart.
type BadEvent struct {
	Seq   int64  `json:"seq"`
	Index int    `json:"index"`
	Kind  string `json:"kind"`
	Tx    uint64 `json:"tx"`
	Error string `json:"error"`
}

// DataReport compares a participant's log with its data database.
type DataReport struct {
	// Prepared and Markers count this participant's GIDs (its cluster and
	// node id) in pg_prepared_xacts and in tpcd_markers.
	Prepared int `json:"prepared"`
	Markers  int `json:"markers"`
	// Foreign counts tpcd GIDs in the data database that belong to another
	// cluster or node; ForeignGIDs lists the first few. They are not this
	// participant's business and are not problems.
	Foreign     int      `json:"foreign"`
	ForeignGIDs []string `json:"foreign_gids,omitempty"`
	// Findings are the transactions where the log and the database do not
	// simply agree, by transaction id. Those with Problem set are
	// inconsistencies; the others are states a restart finishes by itself.
	Findings []Finding `json:"findings"`
	// Unconfirmed is set when there were too many candidate problems to
	// re-check each one against the log (see docs/REPLAY.md).
	Unconfirmed bool `json:"unconfirmed,omitempty"`
}

// Finding categories; docs/REPLAY.md explains each and what a restart does.
const (
	// Problems.
	FindingOrphan        = "orphan"         // prepared in PostgreSQL, not prepared in the log
	FindingMissing       = "missing"        // prepared in the log, neither prepared nor committed
	FindingStillPrepared = "still-prepared" // committed in the log, still prepared in PostgreSQL
	FindingStrayMarker   = "stray-marker"   // marker present, not prepared or committed in the log
	// Consistent states a restart completes.
	FindingCommitUnlogged   = "commit-unlogged"   // prepared in the log, marker present: it committed
	FindingAbortUnlogged    = "abort-unlogged"    // prepared in the log, rolled back, coordinator decided abort
	FindingPreparedUnlogged = "prepared-unlogged" // lazy-prepared: prepared in PostgreSQL, Prepared not yet logged
	// A problem: the engine's start step does something with the
	// transaction that no category above describes.
	FindingUnclassified = "unclassified"
)

// Finding is one transaction where the log and the data database differ.
type Finding struct {
	Category string `json:"category"`
	// Problem marks an inconsistency (exit status 2).
	Problem bool   `json:"problem"`
	Tx      uint64 `json:"tx"`
	GID     string `json:"gid"`
	// Log is the transaction's state in the log: prepared, committed, or
	// "ended (<last event kind>)", or "no events".
	Log          string `json:"log"`
	PreparedInDB bool   `json:"prepared_in_db"`
	MarkerInDB   bool   `json:"marker_in_db"`
	// Detail explains the finding and what a restart of the node does.
	Detail string `json:"detail"`
	// Restart is what the engine's start step (and the first tick after
	// it) does with the transaction, one event or effect per line as
	// engine.DescribeEvent and engine.DescribeEffect render them: an event
	// logged is "log <event>". Empty if it does nothing.
	Restart []string `json:"restart,omitempty"`
}
