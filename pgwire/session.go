package pgwire

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/rpc"
)

// session is one client connection after authentication: its routing
// choice, its transaction, and its extended-protocol statements and
// portals. One goroutine runs it; only cancelRunning comes from another.
type session struct {
	srv    *Server
	conn   net.Conn
	be     *pgproto3.Backend
	log    *slog.Logger
	ctx    context.Context
	pid    uint32
	secret []byte
	user   string
	app    string
	vals   *values

	// sticky is the routing SET tpcd.node chose (unset: none).
	sticky target

	tx txState

	stmts   map[string]*prepared
	portals map[string]*portal
	// skipToSync: an extended-protocol message failed; what follows is
	// ignored until Sync, as PostgreSQL does.
	skipToSync bool
	// describeWanted is a portal whose Describe is answered with its
	// result when the next message executes it (a describe of its own
	// otherwise).
	describeWanted *portal
	// memo keeps what planning a batch worked out, for its messages'
	// handlers (ahead.go).
	memo batchMemo

	mu           sync.Mutex
	cancelCall   context.CancelFunc
	cancelledRun bool
}

// prepared is a statement of the extended protocol (Parse).
type prepared struct {
	st *statement // nil for an empty query string
	// paramOIDs are the types Parse gave (0: unspecified), completed by
	// a describe.
	paramOIDs []uint32
	// declared are the types of paramOIDs the participants prepare the
	// statement with (declaredTypes); nil for none.
	declared  []uint32
	described *describedStmt
}

// newPrepared is the statement a Parse names, of stmts (none for an empty
// query string, else one).
func newPrepared(m *pgproto3.Parse, stmts []*statement) *prepared {
	p := &prepared{paramOIDs: slices.Clone(m.ParameterOIDs), declared: declaredTypes(m.ParameterOIDs)}
	if len(stmts) == 1 {
		p.st = stmts[0]
	}
	return p
}

// portal is a bound statement (Bind).
type portal struct {
	name    string
	stmt    *prepared
	params  []*string
	formats []int16
	// rest holds the rows an Execute with a row limit left for the next
	// one (PortalSuspended).
	rest *engine.StmtResult
}

func newSession(srv *Server, conn net.Conn, be *pgproto3.Backend, params map[string]string, pid uint32, secret []byte) *session {
	s := &session{srv: srv, conn: conn, be: be, pid: pid, secret: slices.Clone(secret), user: params["user"], app: params["application_name"],
		vals: newValues(), stmts: map[string]*prepared{}, portals: map[string]*portal{}}
	s.log = srv.logger.With("client", conn.RemoteAddr().String(), "pid", pid)
	// The coordinator counts open transactions per client address. A
	// session waits for its last commit to be applied before its next
	// statement (txState.waitApplied): its acks must not dawdle.
	s.ctx = api.WithPromptAcks(rpc.WithCaller(context.Background(), rpc.Caller{Addr: conn.RemoteAddr().String(), Roles: rpc.RoleClient, Authenticated: true}))
	s.tx.s = s
	return s
}

// greet ends the start-up: the settings a client reads, the cancel key,
// ready.
func (s *session) greet() error {
	for _, p := range [][2]string{
		{"server_version", ServerVersion},
		{"server_encoding", "UTF8"},
		{"client_encoding", "UTF8"},
		{"DateStyle", "ISO, MDY"},
		{"IntervalStyle", "postgres"},
		{"integer_datetimes", "on"},
		{"standard_conforming_strings", "on"},
		{"is_superuser", "off"},
		{"session_authorization", s.user},
		{"application_name", s.app},
	} {
		s.be.Send(&pgproto3.ParameterStatus{Name: p[0], Value: p[1]})
	}
	s.be.Send(&pgproto3.BackendKeyData{ProcessID: s.pid, SecretKey: s.secret})
	s.be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	return s.be.Flush()
}

// run serves the session until the client leaves; whatever transaction it
// left open is rolled back.
func (s *session) run() {
	defer s.tx.abandon()
	if s.greet() != nil {
		return
	}
	for {
		msg, err := s.be.Receive()
		if err != nil {
			s.log.Debug("connection ended", "err", err)
			return
		}
		msgs := []pgproto3.FrontendMessage{msg}
		if opensBatch(msg) && !s.skipToSync {
			// The messages up to Sync, read before any is answered, may
			// be a whole transaction that one call can run (ahead.go).
			if msgs, err = s.readBatch(msg); err != nil {
				s.log.Debug("connection ended", "err", err)
				return
			}
			s.planBatch(msgs)
		}
		for _, m := range msgs {
			if !s.handle(m) {
				return
			}
		}
		s.endBatch()
	}
}

// handle serves one message; false ends the session.
func (s *session) handle(msg pgproto3.FrontendMessage) bool {
	if _, ok := msg.(*pgproto3.Terminate); ok {
		return false
	}
	if s.skipToSync {
		if _, ok := msg.(*pgproto3.Sync); !ok {
			return true
		}
	}
	if !s.settleDeferred(msg) {
		if _, ok := msg.(*pgproto3.Sync); !ok {
			return true
		}
	}
	flush := false
	switch m := msg.(type) {
	case *pgproto3.Query:
		s.simpleQuery(m.String)
		flush = true
	case *pgproto3.Parse:
		s.extended(s.parse(m))
	case *pgproto3.Bind:
		s.extended(s.bind(m))
	case *pgproto3.Describe:
		s.extended(s.describe(m))
	case *pgproto3.Execute:
		s.extended(s.execute(m))
	case *pgproto3.Close:
		s.extended(s.closeObject(m))
	case *pgproto3.Sync:
		s.sync()
		flush = true
	case *pgproto3.Flush:
		flush = true
	default:
		s.extended(&pgError{code: codeFeatureNotSupported, message: fmt.Sprintf("message %T is not supported through tpcd", msg)})
		flush = true
	}
	if flush {
		if err := s.be.Flush(); err != nil {
			return false
		}
	}
	return true
}

// settleDeferred runs what waited to see the next message: a Describe of
// a portal that msg does not execute, and a statement outside a
// transaction block held back in case it commits alone (txState.pending),
// unless msg is the Sync that commits it with it.
// It reports false when that failed: msg is then skipped, up to Sync.
func (s *session) settleDeferred(msg pgproto3.FrontendMessage) bool {
	if p := s.describeWanted; p != nil {
		if ex, ok := msg.(*pgproto3.Execute); !ok || ex.Portal != p.name {
			s.describeWanted = nil
			if err := s.describePortal(p); err != nil {
				s.extended(err)
				return false
			}
		}
	}
	if _, ok := msg.(*pgproto3.Sync); !ok && s.tx.pending != nil {
		if err := s.tx.flushPending(); err != nil {
			s.extended(err)
			return false
		}
	}
	return true
}

// extended reports an extended-protocol message's error, if any: the
// transaction fails and the messages up to Sync are skipped.
func (s *session) extended(err error) {
	if err == nil {
		return
	}
	s.sendError(err, 0)
	s.skipToSync = true
}

// sendError sends err as an ErrorResponse; the current transaction (block
// or implicit) fails.
func (s *session) sendError(err error, offset int) {
	pe := asPGError(err, offset)
	s.tx.failed = true
	s.be.Send(pe.response())
}

func (s *session) notice(code, message string) {
	s.be.Send(&pgproto3.NoticeResponse{Severity: "WARNING", SeverityUnlocalized: "WARNING", Code: code, Message: message})
}

func (s *session) readyForQuery() {
	s.be.Send(&pgproto3.ReadyForQuery{TxStatus: s.tx.status()})
}

// simpleQuery runs a Query message: its statements one after another,
// outside a transaction block in one implicit transaction, as PostgreSQL
// does; the first error ends it.
func (s *session) simpleQuery(query string) {
	// A Query destroys the unnamed statement and portal.
	delete(s.stmts, "")
	delete(s.portals, "")
	stmts, err := parseQuery(query)
	switch {
	case err != nil:
		s.sendError(err, 0)
	case len(stmts) == 0:
		s.be.Send(&pgproto3.EmptyQueryResponse{})
	}
	if err == nil {
		s.planStatements(stmts)
		defer s.endBatch()
		for _, st := range stmts {
			if err := s.runStatement(st, nil, nil, true, &output{describe: true}); err != nil {
				s.sendError(err, st.offset)
				break
			}
		}
	}
	if err := s.tx.endImplicit(); err != nil {
		s.sendError(err, 0)
		s.tx.endImplicit()
	}
	s.readyForQuery()
}

// sync ends an extended-protocol batch: an implicit transaction commits
// (or, failed, rolls back), and the client hears the transaction status.
func (s *session) sync() {
	s.skipToSync = false
	if err := s.tx.endImplicit(); err != nil {
		s.sendError(err, 0)
		s.tx.endImplicit()
	}
	if !s.tx.block {
		// Portals live as long as their transaction.
		clear(s.portals)
	}
	s.readyForQuery()
}

// running returns the context of a coordinator call that a CancelRequest
// may cancel, and the function that ends it.
func (s *session) running() (context.Context, func()) {
	ctx, cancel := context.WithCancel(s.ctx)
	s.mu.Lock()
	s.cancelCall = cancel
	s.mu.Unlock()
	return ctx, func() {
		s.mu.Lock()
		s.cancelCall = nil
		s.mu.Unlock()
		cancel()
	}
}

// cancelRunning cancels the coordinator call in progress, if any.
func (s *session) cancelRunning() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cancelCall != nil {
		s.log.Info("statement cancelled by the client")
		s.cancelCall()
	}
}

// background is the context of a rollback after the client left.
func background() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), time.Minute)
}
