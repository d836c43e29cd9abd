package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/queries"
)

// Timing of the log lock.
const (
	// DefaultLogLockWait is how long a coordinator waits at start for the
	// log lock: a predecessor just killed holds it until its server notices
	// the closed connection (at once), one whose machine vanished until the
	// server's keepalives give up on it (about 11 s, see logLockParams).
	DefaultLogLockWait = 15 * time.Second
	// logLockCheck is how often a holder makes sure it still holds the
	// lock, and finds out that its session broke.
	logLockCheck = 2 * time.Second
)

// logLockParams make the server probe the holder's connection, so that a
// holder whose machine vanished without closing it loses the lock in about
// 5 + 3 × 2 seconds rather than the system default of hours, also when
// the server was sending it something (tcp_user_timeout).
var logLockParams = map[string]string{
	"tcp_keepalives_idle":     "5",
	"tcp_keepalives_interval": "2",
	"tcp_keepalives_count":    "3",
	"tcp_user_timeout":        "11000",
}

// logLockApp is the application_name of a holder's session; a nonce of
// the process follows it, by which a holder knows its own old session.
const logLockApp = "tpcd coordinator (log lock)"

// LogLock keeps a second coordinator without a lease from serving on the
// same log database: two would interleave their events in one log. The
// holder keeps a session of its own on the log database with an advisory
// lock; another coordinator that finds the lock held refuses to start, and
// a standby (--lease) does not take the slot over while it is held. A
// holder that finds its lock gone (the session broke, and another took the
// lock before it could take it again) must stop, as after a lost lease.
type LogLock struct {
	cfg    *pgx.ConnConfig
	logger *slog.Logger

	mu   sync.Mutex
	conn *pgx.Conn
	// app is this process's application_name, unique to it.
	app string
	// slot, once set (WatchSlot), is the generation of the log's slot this
	// coordinator claimed; the watch stops it once the slot moved on.
	slot int64

	stop context.CancelFunc
	done chan struct{}
	lossSignal
}

// LockLog takes the log lock on the log database at uri, waiting up to
// wait while another session holds it, then keeps it checked in the
// background until Close.
func LockLog(ctx context.Context, uri string, wait time.Duration, logger *slog.Logger) (*LogLock, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg, err := pgx.ParseConfig(uri)
	if err != nil {
		return nil, fmt.Errorf("log lock: %w", err)
	}
	for k, v := range logLockParams {
		cfg.RuntimeParams[k] = v
	}
	l := &LogLock{cfg: cfg, logger: logger, done: make(chan struct{}), lossSignal: newLossSignal()}
	l.app = logLockApp + " #" + strconv.FormatUint(rand.Uint64(), 36)
	cfg.RuntimeParams["application_name"] = l.app
	deadline := time.Now().Add(wait)
	waiting := false
	for {
		holder, err := l.take(ctx)
		switch {
		case err == nil && holder == "":
			if waiting {
				logger.Info("log lock taken: the other coordinator on this log stopped")
			}
			var wctx context.Context
			wctx, l.stop = context.WithCancel(context.Background())
			go l.watch(wctx)
			return l, nil
		case err != nil && (ctx.Err() != nil || refused(err)):
			l.dropConn()
			return nil, fmt.Errorf("log database: %w", err)
		case !time.Now().Before(deadline):
			l.dropConn()
			if err != nil {
				return nil, fmt.Errorf("log database: %w", err)
			}
			return nil, fmt.Errorf("another coordinator serves on this log database (its session: %s): stop it first, or give every coordinator of this log --lease to run one as the others' standby", holder)
		case err == nil && !waiting:
			waiting = true
			logger.Warn("another coordinator holds this log's lock; waiting for it to stop", "holder", holder, "up_to", wait)
		}
		select {
		case <-ctx.Done():
			l.dropConn()
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// refused reports an error no retry mends: the server refused the login
// or has no such database.
func refused(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (strings.HasPrefix(pgErr.Code, "28") || strings.HasPrefix(pgErr.Code, "3D"))
}

// WatchSlot makes the watch check, with the lock, that the log's slot is
// still at generation (ClaimSlot's): a standby that took it over while the
// lock's session was broken has fenced this coordinator out of the log,
// and the lock counts as lost.
func (l *LogLock) WatchSlot(generation int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.slot = generation
}

// take connects if need be and tries the lock once. A held lock comes back
// as its holder's description. A holder that is this coordinator's own
// session from before its connection broke (a cut the server has not
// noticed yet) is ended, and the lock tried again.
func (l *LogLock) take(ctx context.Context) (holder string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn == nil {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		l.conn, err = pgx.ConnectConfig(cctx, l.cfg)
		cancel()
		if err != nil {
			l.conn = nil
			return "", err
		}
	}
	q := queries.New()
	endedOwn := false
	for range 10 {
		locked, err := q.LogLockTry(ctx, l.conn)
		if err != nil {
			l.dropConn()
			return "", err
		}
		if locked {
			return "", nil
		}
		h, err := q.LogLockHolder(ctx, l.conn)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			continue // let go since: try again
		case err != nil:
			l.dropConn()
			return "", err
		case h.Application != l.app:
			return describeHolder(h), nil
		case !endedOwn:
			l.logger.Info("log lock: ending this coordinator's own session from before its connection broke", "pid", h.Pid)
			if _, err := q.LogLockEndSession(ctx, l.conn, h.Pid); err != nil {
				l.dropConn()
				return "", err
			}
			endedOwn = true
		}
		// Its own old session, ending: give it a moment.
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return "", errors.New("the log lock is still held by a session of this coordinator's that does not end")
}

func describeHolder(h queries.LogLockHolderRow) string {
	d := fmt.Sprintf("server process %d, from %s, %q", h.Pid, h.Client, h.Application)
	if h.BackendStart.Valid {
		d += ", since " + h.BackendStart.Time.UTC().Format(time.RFC3339)
	}
	return d
}

// LogLockHolder says which session holds the log lock of the database db
// is on, if one does: a standby checks it before it takes the slot over.
func LogLockHolder(ctx context.Context, db queries.DBTX) (holder string, held bool, err error) {
	h, err := queries.New().LogLockHolder(ctx, db)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return describeHolder(h), true, nil
}

func (l *LogLock) dropConn() {
	if l.conn != nil {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		l.conn.Close(cctx)
		cancel()
		l.conn = nil
	}
}

// watch checks every logLockCheck that the lock is still this session's.
// A broken session is connected again and the lock taken again; if
// another took it meanwhile, the lock is lost. A log out of reach is
// waited for: nobody else can take the lock from a server that is down.
func (l *LogLock) watch(ctx context.Context) {
	defer close(l.done)
	broken := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(logLockCheck):
		}
		held, moved, err := l.check(ctx)
		if moved != "" {
			l.lose(fmt.Errorf("another coordinator took this log's slot over (%s): this one is fenced out of the log", moved))
			return
		}
		if err == nil && held {
			continue
		}
		if err == nil {
			// The session lives but holds no lock: nothing here unlocks it,
			// so somebody ran pg_advisory_unlock_all or the like.
			l.lose(errors.New("the session on the log database no longer holds the lock"))
			return
		}
		if ctx.Err() != nil {
			return
		}
		holder, terr := l.take(ctx)
		switch {
		case terr == nil && holder == "":
			if broken {
				l.logger.Info("log lock taken again")
			}
			broken = false
		case terr == nil:
			l.lose(fmt.Errorf("its session on the log database broke, and another coordinator took the lock meanwhile (%s)", holder))
			return
		case !broken:
			broken = true
			l.logger.Warn("log lock: session on the log database broke; taking the lock again once it answers", "err", terr)
		}
	}
}

// check asks, on the lock's session, whether it still holds the lock and
// (with WatchSlot) whether the slot moved on, naming its new holder then.
// A session that does not answer is dropped.
func (l *LogLock) check(ctx context.Context) (held bool, moved string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn == nil {
		return false, "", errors.New("not connected")
	}
	qctx, cancel := context.WithTimeout(ctx, logLockCheck)
	defer cancel()
	q := queries.New()
	if held, err = q.LogLockMine(qctx, l.conn); err == nil && l.slot != 0 {
		var slot queries.LeaseOfRow
		if slot, err = q.LeaseOf(qctx, l.conn, api.CoordinatorName); err == nil && slot.Generation != l.slot {
			moved = slot.Holder
		}
	}
	if err != nil {
		l.dropConn()
	}
	return held, moved, err
}

func (l *LogLock) lose(why error) {
	if l.signal(fmt.Errorf("lost the log lock: %w", why)) {
		l.logger.Error("log lock lost: this coordinator stops", "err", why)
	}
}

// Close stops checking and ends the session, which releases the lock. Call
// it after the coordinator has stopped.
func (l *LogLock) Close() {
	l.stop()
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	l.dropConn()
}
