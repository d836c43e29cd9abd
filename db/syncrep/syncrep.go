// Package syncrep tells when PostgreSQL committed without its synchronous
// standby. A commit (or PREPARE TRANSACTION) on a server with a synchronous
// standby waits until the standby has it. When that wait is cancelled (the
// statement timed out, or the backend was cancelled), PostgreSQL does not
// fail the statement: it warns ("canceling wait for synchronous
// replication") and the transaction stays committed, or prepared, on the
// primary alone, lost if the standby is promoted. A caller that takes a
// commit for durable must therefore check, after each one, that no such
// warning came on its connection.
package syncrep

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ErrNotReplicated is what a commit whose wait for the standby was
// cancelled amounts to.
var ErrNotReplicated = errors.New("the wait for the synchronous standby was cancelled: the server has it, its standby may not")

// cancelled holds the connections on which the warning came, until the
// statement that caused it is checked.
var cancelled sync.Map // *pgconn.PgConn -> struct{}

// Watch makes the connections of a pool made from cfg note the warning.
// It keeps any notice handler and BeforeClose cfg already has.
func Watch(cfg *pgxpool.Config) {
	prevNotice := cfg.ConnConfig.OnNotice
	cfg.ConnConfig.OnNotice = func(pc *pgconn.PgConn, n *pgconn.Notice) {
		if strings.HasPrefix(n.Message, "canceling wait for synchronous replication") {
			cancelled.Store(pc, struct{}{})
		}
		if prevNotice != nil {
			prevNotice(pc, n)
		}
	}
	prevClose := cfg.BeforeClose
	cfg.BeforeClose = func(c *pgx.Conn) {
		// What was noted of a connection goes with it.
		cancelled.Delete(c.PgConn())
		if prevClose != nil {
			prevClose(c)
		}
	}
}

// Cancelled reports whether pc got the warning since the last call, and
// forgets it. Call it before a commit, to clear what an earlier statement
// left, and after, to learn whether this one is only on the primary.
func Cancelled(pc *pgconn.PgConn) bool {
	_, ok := cancelled.LoadAndDelete(pc)
	return ok
}

// Durably runs commit, which commits once on conn, and returns once what
// it committed is durable: on the server, and on its synchronous standby
// if it has one. When the commit's wait for the standby was cancelled, a
// Barrier after it makes it durable, or Durably fails with
// ErrNotReplicated; the caller then cannot tell whether the commit will
// outlive a failover, and must treat it as one whose answer was lost.
func Durably(ctx context.Context, conn *pgx.Conn, commit func() error) error {
	Cancelled(conn.PgConn())
	if err := commit(); err != nil {
		return err
	}
	if Cancelled(conn.PgConn()) {
		return Barrier(ctx, conn)
	}
	return nil
}

// BarrierSQL is the statement of Barrier's transaction.
const BarrierSQL = "SELECT pg_logical_emit_message(true, 'tpcd', 'barrier')"

// BarrierTries bounds Barrier's attempts.
const BarrierTries = 3

// Barrier returns once the synchronous standby, if the server has one, has
// everything the server committed before the call: it commits a
// transaction of its own that writes to the WAL (a transactional logical
// message, which any role may emit and nothing reads), so that its commit
// waits for the standby, and the standby confirms records in order. (A
// transaction that only takes an id does not do: PostgreSQL does not wait
// for the standby when nothing but the commit record was written.) A
// commit whose own wait was cancelled is durable once a barrier after it
// returns. Barrier tries a few times when its own wait is cancelled, then
// gives up with ErrNotReplicated.
func Barrier(ctx context.Context, conn *pgx.Conn) error {
	for range BarrierTries {
		Cancelled(conn.PgConn())
		if _, err := conn.Exec(ctx, BarrierSQL); err != nil {
			return fmt.Errorf("wait for the synchronous standby: %w", err)
		}
		if !Cancelled(conn.PgConn()) {
			return nil
		}
	}
	return ErrNotReplicated
}
