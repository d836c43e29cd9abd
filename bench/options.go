package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/tpcd/tpcd/engine"
)

// DefaultMaxConns sizes every database pool of a cluster bench starts, as
// `tpcd participant --max-conns` does by default.
const DefaultMaxConns = 100

// Baselines that Options.Baselines accepts: the same workload done by the
// bench clients themselves, straight on the PostgreSQL servers tpcd uses.
const (
	// BaselineNone measures tpcd alone.
	BaselineNone = "none"
	// BaselineRaw is two-phase commit with one forced decision row per
	// transaction on the coordinator's log server: on every touched
	// server BEGIN, the statements and PREPARE TRANSACTION, the decision,
	// COMMIT PREPARED on each.
	BaselineRaw = "raw"
	// BaselineRawGrouped is BaselineRaw with the decision rows of
	// concurrent transactions written in one insert and commit (one WAL
	// flush for all) by a writer they hand them to; each transaction
	// waits for the commit that carries its row.
	BaselineRawGrouped = "raw-grouped"
	// BaselineLocal is a plain local transaction, what an application
	// without tpcd does: all of a transaction's statements on one data
	// server, chosen round robin, in BEGIN; statements; COMMIT. With one
	// statement per transaction tpcd commits in one phase too, and this
	// is what it is measured against.
	BaselineLocal = "local"
)

// knownBaselines lists the baselines in the order help texts name them.
var knownBaselines = []string{BaselineNone, BaselineRaw, BaselineRawGrouped, BaselineLocal}

// Forms that Options.Form accepts: how a transaction reaches the
// coordinator.
const (
	// FormInteractive sends a call per statement (the first begins the
	// transaction) and then commit, as an application that decides each
	// statement after the one before does.
	FormInteractive = "interactive"
	// FormSingle sends the whole transaction, statements and commit, in
	// one transact call; the raw baseline then also runs each server's
	// statements at the same time as the other servers'.
	FormSingle = "single"
	// FormDirect is the interactive form with the statements sent straight
	// to their participants (api.MethodDirectExec), but for those on the
	// participant of the first, which begins the transaction through the
	// coordinator; the commit names what went where.
	FormDirect = "direct"
	// FormPlain puts each transaction's statements on one participant, as
	// the local baseline does, and sends it to that participant as a plain
	// transaction (api.MethodPlainTransact), the coordinator left out.
	FormPlain = "plain"
)

// Transports that Options.Transport accepts: how the clients' calls reach
// the coordinator.
const (
	// TransportHTTP sends each call as an HTTP/1.1 request on a kept-alive
	// connection through Go's net/http client (rpc.ClientOptions.HTTP1),
	// as most applications' HTTP clients do.
	TransportHTTP = "http"
	// TransportStream sends each call as one frame of a batch stream
	// (rpc.ClientOptions.Stream): the same JSON-RPC without HTTP's request
	// line and headers.
	TransportStream = "stream"
	// TransportMux has the clients share a few multiplexed batch streams
	// (rpc.ClientOptions.Multiplex): calls made at the same moment by
	// different clients travel in one frame, as a front door's or an
	// application server's many sessions could send theirs.
	TransportMux = "mux"
)

// muxStreams is how many multiplexed streams the clients share with
// TransportMux, to each coordinator and each participant. One gathers the
// most calls into each frame: on 2026-12-08, 32 interactive clients sent
// 4.3 messages per frame on one stream against 1.7 on four, and bench's
// process spent less CPU per transaction (docs/PERFORMANCE.md).
const muxStreams = 1

// Defaults for Options.
const (
	DefaultConcurrency  = 8
	DefaultStatements   = 3
	DefaultParticipants = 3
	DefaultHotKeys      = 16
	DefaultDuration     = 20 * time.Second
	DefaultWarmup       = 5 * time.Second
	// DefaultLockTimeout ends a lock wait in the raw baseline as tpcd's
	// participants do (their --lock-timeout): PostgreSQL cannot see a
	// deadlock that spans two servers, so without it hot keys could hang
	// the baseline forever.
	DefaultLockTimeout = 2 * time.Second
	// DefaultCallTimeout bounds one call or statement; a transaction that
	// hits it counts as failed (outcome unknown).
	DefaultCallTimeout = 60 * time.Second
)

// Options configure a benchmark run. The zero value of a field selects its
// default.
type Options struct {
	// Coordinator is the HOST:PORT of a running coordinator. Empty: Run
	// starts a local cluster with StartCluster.
	Coordinator string
	// Standbys are the HOST:PORT of coordinators that take Coordinator's
	// place when it goes (tpcd coordinator --lease); calls fail over to
	// whichever serves.
	Standbys []string
	// StartCluster starts a cluster in this process for Run to measure
	// when Coordinator is empty (cmd/tpcd passes one that runs
	// localcluster, with an embedded PostgreSQL per node). It is the
	// caller's so that bench, a client of the coordinator, never links the
	// nodes themselves.
	StartCluster func(context.Context, ClusterSpec) (StartedCluster, error)
	// Participants is the number of participants of a cluster Run starts
	// (default 3). Against a running coordinator it is asked for.
	Participants int
	// PGBin is where initdb and postgres are, for a cluster Run starts.
	PGBin string
	// MaxConns sizes each database pool of a cluster Run starts (default
	// DefaultMaxConns); the data pools need one connection per open
	// transaction.
	MaxConns int
	// LazyPrepared starts the participants of a cluster Run starts with
	// engine.ParticipantConfig.LazyPrepared: the yes vote does not wait
	// for the participant's Prepared event to be durable.
	LazyPrepared bool
	// Protocol is how the coordinator of a cluster Run starts commits (0:
	// the engine's default).
	Protocol engine.Protocol
	// DecisionRetry is the coordinator's first decision resend interval
	// (engine.CoordinatorConfig.RetryMin; a decider's waits ten times as
	// long) in a cluster Run starts; 0 keeps the engine's default.
	DecisionRetry time.Duration

	// Concurrency is the number of clients, each running one transaction at
	// a time (default 8).
	Concurrency int
	// Connections is the number of RPC connections the clients share,
	// round robin. 0: one per client.
	Connections int
	// Statements per transaction (default 3), spread over the participants
	// round robin from a random first participant.
	Statements int
	// Form is FormInteractive (default), FormSingle, FormDirect or
	// FormPlain.
	Form string
	// NoKeys sends FormSingle's transactions without idempotency keys.
	// With a key (the default), a call whose reply was lost is sent again
	// and answered with the outcome of the first, never run twice.
	NoKeys bool
	// Transport is TransportHTTP (default), TransportStream or
	// TransportMux.
	Transport string
	// HotFraction of the statements write one of HotKeys keys (default 16)
	// to provoke lock conflicts; the others write keys never used before.
	HotFraction float64
	HotKeys     int

	// Duration of the measurement (default 20s), unless Transactions is
	// set: then exactly that many transactions are measured.
	Duration     time.Duration
	Transactions int
	// Warmup runs the load this long before measuring (default 5s; a
	// negative value disables it).
	Warmup time.Duration
	// Rounds repeats the measurement (default 1), tpcd and the baseline
	// taking turns, so that a machine whose speed drifts shows as spread
	// between rounds instead of in one mode's favour; every round warms up.
	Rounds int

	// Baselines to measure besides tpcd, in this order, each right after
	// tpcd in every round: BaselineRaw, BaselineRawGrouped, BaselineLocal
	// (BaselineNone and repeats are left out). Every baseline needs the
	// data databases (DataDBs, in node order), the two-phase ones the
	// coordinator's log database (LogDB) too; Run knows them itself when
	// it starts the cluster.
	Baselines []string
	DataDBs   []string
	LogDB     string
	// LockTimeout for the baselines' transactions (default 2s).
	LockTimeout time.Duration
	// CallTimeout bounds each call and statement (default 60s).
	CallTimeout time.Duration

	// CPUProfile and MemProfile, if set, are files that receive a pprof CPU
	// profile of the tpcd measurement and an allocation profile taken at
	// its end. They profile this process, which holds the nodes too when
	// Run started the cluster.
	CPUProfile, MemProfile string
	// Trace, if set, receives an execution trace of the tpcd measurement
	// (go tool trace; its -pprof=sched view shows where goroutines waited
	// for a CPU).
	Trace string
	// WatchPID, if set, is a process (say, an external coordinator) whose
	// resident memory is sampled every second during the measurements.
	WatchPID int

	// Rate, if set, runs transactions at this many per second (an open
	// system, as pgbench --rate): they are due on Schedule
	// (SchedulePoisson by default, or ScheduleFixed) whether or not the
	// last ones are done, the first free client of Concurrency takes the
	// next one due, and latency counts from the due time, so that waiting
	// for a client counts as it would for a user. Without it every client
	// starts its next transaction as soon as the last one ends.
	Rate     float64
	Schedule string
	// LatencyLimit, if set, counts committed transactions slower than it
	// (Result.Late) and, with Rate, skips a transaction that is already
	// this late when a client is free (ScheduleResult.Skipped), as pgbench
	// --latency-limit.
	LatencyLimit time.Duration

	// Progress, if set, receives a one-line progress display, redrawn in
	// place every second; pass a terminal only.
	Progress io.Writer
	// ProgressEvery, with ProgressLog, writes a line there at this
	// interval, as pgbench -P: committed per second, latency mean and
	// standard deviation, aborts (and with Rate, lag and skips) over the
	// interval, warm-up included.
	ProgressEvery time.Duration
	ProgressLog   io.Writer
	Logger        *slog.Logger
}

// ClusterSpec is the cluster Run asks Options.StartCluster for: the fields
// of Options of the same names.
type ClusterSpec struct {
	Participants  int
	PGBin         string
	MaxConns      int
	LazyPrepared  bool
	DecisionRetry time.Duration
	Protocol      engine.Protocol
	Logger        *slog.Logger
}

// StartedCluster is a cluster started for Run.
type StartedCluster struct {
	// Coordinator is the coordinator's HOST:PORT.
	Coordinator string
	// LogDB is the coordinator's log database and DataDBs the
	// participants' data databases in node order, for the raw baseline.
	LogDB   string
	DataDBs []string
	// Stop stops the cluster and removes what it started.
	Stop func() error
}

func (o *Options) fill() {
	if o.Participants <= 0 {
		o.Participants = DefaultParticipants
	}
	if o.MaxConns <= 0 {
		o.MaxConns = DefaultMaxConns
	}
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.Connections <= 0 || o.Connections > o.Concurrency {
		o.Connections = o.Concurrency
	}
	if o.Statements <= 0 {
		o.Statements = DefaultStatements
	}
	if o.Form == "" {
		o.Form = FormInteractive
	}
	if o.Transport == "" {
		o.Transport = TransportHTTP
	}
	if o.HotKeys <= 0 {
		o.HotKeys = DefaultHotKeys
	}
	if o.Duration <= 0 && o.Transactions <= 0 {
		o.Duration = DefaultDuration
	}
	if o.Warmup == 0 {
		o.Warmup = DefaultWarmup
	}
	if o.Warmup < 0 {
		o.Warmup = 0
	}
	o.Baselines = cleanBaselines(o.Baselines)
	if o.Rounds <= 0 {
		o.Rounds = 1
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = DefaultLockTimeout
	}
	if o.CallTimeout <= 0 {
		o.CallTimeout = DefaultCallTimeout
	}
	if o.Schedule == "" {
		o.Schedule = SchedulePoisson
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports options that cannot work, before anything starts.
func (o *Options) Validate() error {
	var errs []error
	if o.HotFraction < 0 || o.HotFraction > 1 {
		errs = append(errs, fmt.Errorf("hot fraction %g: must lie within 0..1", o.HotFraction))
	}
	if o.Transactions < 0 {
		errs = append(errs, fmt.Errorf("transactions %d: must not be negative", o.Transactions))
	}
	if o.Rounds < 0 {
		errs = append(errs, fmt.Errorf("rounds %d: must not be negative", o.Rounds))
	}
	switch o.Form {
	case "", FormInteractive, FormSingle, FormDirect, FormPlain:
	default:
		errs = append(errs, fmt.Errorf("form %q: want %s, %s, %s or %s", o.Form, FormInteractive, FormSingle, FormDirect, FormPlain))
	}
	if o.Rate < 0 || math.IsNaN(o.Rate) || math.IsInf(o.Rate, 0) {
		errs = append(errs, fmt.Errorf("rate %g: must be a positive number of transactions per second (0: as fast as the clients go)", o.Rate))
	}
	switch o.Schedule {
	case "", SchedulePoisson, ScheduleFixed:
	default:
		errs = append(errs, fmt.Errorf("schedule %q: want %s or %s", o.Schedule, SchedulePoisson, ScheduleFixed))
	}
	if o.LatencyLimit < 0 || o.ProgressEvery < 0 {
		errs = append(errs, errors.New("latency limit and progress interval must not be negative"))
	}
	switch o.Transport {
	case "", TransportHTTP, TransportStream, TransportMux:
	default:
		errs = append(errs, fmt.Errorf("transport %q: want %s, %s or %s", o.Transport, TransportHTTP, TransportStream, TransportMux))
	}
	for _, b := range o.Baselines {
		if !slices.Contains(knownBaselines, b) {
			errs = append(errs, fmt.Errorf("baseline %q: want one of %s", b, strings.Join(knownBaselines, ", ")))
		}
	}
	if o.Coordinator != "" {
		baselines := cleanBaselines(o.Baselines)
		switch {
		case hasTwoPhaseBaseline(baselines) && (len(o.DataDBs) == 0 || o.LogDB == ""):
			errs = append(errs, errors.New("the raw baselines against a running cluster need --data-db (once per participant, in node order) and --log-db (the coordinator's log server)"))
		case len(baselines) > 0 && len(o.DataDBs) == 0:
			errs = append(errs, errors.New("the local baseline against a running cluster needs --data-db (once per participant, in node order)"))
		}
	}
	if o.Coordinator == "" && o.StartCluster == nil {
		errs = append(errs, errors.New("no coordinator to drive: give --coordinator, or a way to start a local cluster (Options.StartCluster)"))
	}
	if o.Coordinator == "" && (len(o.DataDBs) > 0 || o.LogDB != "") {
		errs = append(errs, errors.New("--data-db and --log-db describe a running cluster; give --coordinator too"))
	}
	return errors.Join(errs...)
}

// cleanBaselines drops BaselineNone and repeats, keeping the order.
func cleanBaselines(baselines []string) []string {
	var out []string
	for _, b := range baselines {
		if b != BaselineNone && b != "" && !slices.Contains(out, b) {
			out = append(out, b)
		}
	}
	return out
}

// hasTwoPhaseBaseline tells whether a baseline that writes decisions to
// the log server is among baselines.
func hasTwoPhaseBaseline(baselines []string) bool {
	return slices.Contains(baselines, BaselineRaw) || slices.Contains(baselines, BaselineRawGrouped)
}
