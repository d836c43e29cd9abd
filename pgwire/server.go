package pgwire

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
)

// Coordinator is what the front door needs of tpcd's coordinator: its
// client methods (api), called in the process (node.Coordinator) or over
// JSON-RPC. Errors are the *rpc.Error values the methods answer.
type Coordinator interface {
	Exec(ctx context.Context, p api.ExecParams) (engine.ExecReply, error)
	Transact(ctx context.Context, p api.TransactParams) (engine.TransactReply, error)
	Commit(ctx context.Context, tx engine.TxID) (engine.OutcomeReply, error)
	Rollback(ctx context.Context, tx engine.TxID) (engine.OutcomeReply, error)
	Status(ctx context.Context, tx engine.TxID) (engine.StatusReply, error)
	// WaitApplied waits until tx's commit is applied on every participant
	// (but its marker on the decider), or tx is not being committed.
	WaitApplied(ctx context.Context, tx engine.TxID) error
	// Participants is the number of participants, node ids 0..n-1.
	Participants() int
}

// Options configure a Server.
type Options struct {
	Coordinator Coordinator
	// Users are the names and passwords clients log in with (SCRAM-SHA-256).
	Users map[string]string
	// Trust lets every client in without a password. The caller allows it
	// only on a loopback address.
	Trust bool
	// TLS, if set, answers SSLRequest with TLS; otherwise with 'N'.
	TLS *tls.Config
	// Shards maps a table to its shard key column: statements on it are
	// routed by the hash of the key's value (package shard).
	Shards map[string]string
	// MaxMessageBytes bounds one message from a client. Default 64 MiB.
	MaxMessageBytes int
	Logger          *slog.Logger
}

// ServerVersion is what the front door reports as server_version: the
// PostgreSQL release whose protocol and behaviour it follows.
const ServerVersion = "15.0 (tpcd)"

// Server serves the PostgreSQL protocol on a listener.
type Server struct {
	opts   Options
	auth   *authenticator
	router *router
	logger *slog.Logger

	mu       sync.Mutex
	sessions map[uint32]*session
	conns    map[net.Conn]struct{}
	ln       net.Listener
	closed   bool
	wg       sync.WaitGroup
}

// NewServer checks opts and returns a server that serves once Serve is
// called.
func NewServer(opts Options) (*Server, error) {
	if opts.Coordinator == nil {
		return nil, errors.New("pgwire: no coordinator")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxMessageBytes <= 0 {
		opts.MaxMessageBytes = 64 << 20
	}
	a, err := newAuthenticator(opts.Users, opts.Trust)
	if err != nil {
		return nil, fmt.Errorf("pgwire: %w", err)
	}
	shards := map[string]string{}
	for t, c := range opts.Shards {
		shards[strings.ToLower(t)] = strings.ToLower(c)
	}
	return &Server{opts: opts, auth: a, router: &router{participants: opts.Coordinator.Participants(), shards: shards},
		logger: opts.Logger.With("listener", "pgwire"), sessions: map[uint32]*session{}, conns: map[net.Conn]struct{}{}}, nil
}

// Serve accepts connections on ln until Close.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return net.ErrClosed
	}
	s.ln = ln
	s.mu.Unlock()
	for {
		conn, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return err
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			conn.Close()
			return nil
		}
		s.conns[conn] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.serveConn(conn)
			s.mu.Lock()
			delete(s.conns, conn)
			s.mu.Unlock()
		}()
	}
}

// Close stops accepting, closes every connection (their open transactions
// are rolled back) and waits for the sessions to end.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	if s.ln != nil {
		s.ln.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// serveConn runs one connection: start-up (TLS, cancel requests,
// authentication), then its session.
func (s *Server) serveConn(conn net.Conn) {
	defer conn.Close()
	log := s.logger.With("client", conn.RemoteAddr().String())
	// Start-up must not hang forever on a silent client.
	conn.SetDeadline(time.Now().Add(time.Minute))
	var rw io.ReadWriter = conn
	be := pgproto3.NewBackend(rw, rw)
	be.SetMaxBodyLen(s.opts.MaxMessageBytes)
	tlsDone := false
	var startup *pgproto3.StartupMessage
	for startup == nil {
		msg, err := be.ReceiveStartupMessage()
		if err != nil {
			log.Debug("start-up failed", "err", err)
			return
		}
		switch m := msg.(type) {
		case *pgproto3.SSLRequest:
			if tlsDone || s.opts.TLS == nil {
				if _, err := conn.Write([]byte{'N'}); err != nil {
					return
				}
				continue
			}
			if _, err := conn.Write([]byte{'S'}); err != nil {
				return
			}
			tc := tls.Server(conn, s.opts.TLS)
			if err := tc.Handshake(); err != nil {
				log.Info("TLS handshake failed", "err", err)
				return
			}
			conn, tlsDone = tc, true
			be = pgproto3.NewBackend(tc, tc)
			be.SetMaxBodyLen(s.opts.MaxMessageBytes)
		case *pgproto3.GSSEncRequest:
			if _, err := conn.Write([]byte{'N'}); err != nil {
				return
			}
		case *pgproto3.CancelRequest:
			s.cancel(m.ProcessID, m.SecretKey)
			return
		case *pgproto3.StartupMessage:
			startup = m
		}
	}
	user := startup.Parameters["user"]
	fail := func(e *pgError) {
		be.Send(e.response())
		be.Flush()
	}
	if user == "" {
		fail(&pgError{severity: "FATAL", code: codeInvalidAuthorization, message: "no PostgreSQL user name specified in startup packet"})
		return
	}
	if err := s.negotiate(be, startup); err != nil {
		return
	}
	if err := s.auth.authenticate(be, user); err != nil {
		var pe *pgError
		if errors.As(err, &pe) {
			log.Info("authentication failed", "user", user, "reason", pe.message)
			fail(pe)
		}
		return
	}
	if enc, ok := startup.Parameters["client_encoding"]; ok && !speaksUTF8(enc) {
		// Text goes to the participants as it came, UTF-8 to them: text of
		// another encoding would be read as other characters, or mangled.
		fail(&pgError{severity: "FATAL", code: codeFeatureNotSupported, message: fmt.Sprintf("client_encoding %q is not supported: tpcd's front door speaks UTF8 only", enc),
			hint: "connect with client_encoding UTF8 (PGCLIENTENCODING=UTF8 for libpq clients)"})
		return
	}
	conn.SetDeadline(time.Time{})
	sess := s.newSession(conn, be, startup.Parameters)
	if sess == nil {
		fail(&pgError{severity: "FATAL", code: codeTooManyConnections, message: "no session id free"})
		return
	}
	defer s.forget(sess)
	log.Debug("session started", "user", user, "pid", sess.pid, "tls", tlsDone)
	sess.run()
	log.Debug("session ended", "pid", sess.pid)
}

// negotiate answers a client that asks for a newer minor protocol version
// or for protocol options: the front door speaks 3.0 and knows none.
func (s *Server) negotiate(be *pgproto3.Backend, m *pgproto3.StartupMessage) error {
	var unknown []string
	for k := range m.Parameters {
		if strings.HasPrefix(k, "_pq_.") {
			unknown = append(unknown, k)
		}
	}
	if m.ProtocolVersion == pgproto3.ProtocolVersion30 && len(unknown) == 0 {
		return nil
	}
	be.Send(&pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: 0, UnrecognizedOptions: unknown})
	return nil
}

// newSession registers a session under a fresh process id and secret,
// the pair a CancelRequest must present.
func (s *Server) newSession(conn net.Conn, be *pgproto3.Backend, params map[string]string) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range 100 {
		var b [8]byte
		rand.Read(b[:])
		pid := binary.BigEndian.Uint32(b[:4]) & 0x7fffffff
		if pid == 0 || s.sessions[pid] != nil {
			continue
		}
		sess := newSession(s, conn, be, params, pid, b[4:])
		s.sessions[pid] = sess
		return sess
	}
	return nil
}

func (s *Server) forget(sess *session) {
	s.mu.Lock()
	delete(s.sessions, sess.pid)
	s.mu.Unlock()
}

// cancel cancels the running statement of the session a CancelRequest
// names, if its secret matches.
func (s *Server) cancel(pid uint32, secret []byte) {
	s.mu.Lock()
	sess := s.sessions[pid]
	s.mu.Unlock()
	if sess == nil || subtle.ConstantTimeCompare(sess.secret, secret) != 1 {
		s.logger.Info("cancel request for no session of ours", "pid", pid)
		return
	}
	sess.cancelRunning()
}

// speaksUTF8 reports whether a start-up's client_encoding needs no
// conversion from UTF-8: UTF8 by any of its names, or SQL_ASCII (bytes as
// they are, which is what psql sends from a terminal in the C locale).
// Like PostgreSQL, it ignores case and what is not a letter or digit.
func speaksUTF8(enc string) bool {
	name := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			return r
		case r >= 'A' && r <= 'Z':
			return r + 'a' - 'A'
		}
		return -1
	}, enc)
	return name == "utf8" || name == "unicode" || name == "sqlascii"
}
