package node

import (
	"errors"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5/pgconn"
)

// A commit (or PREPARE TRANSACTION) on a server with a synchronous standby
// waits until the standby has it. When that wait is cancelled (the
// statement timed out, or a backend was cancelled), PostgreSQL does not
// fail the statement: it warns ("canceling wait for synchronous
// replication") and the transaction is committed, or prepared, on the
// primary alone, lost if the standby is promoted. So such a statement is
// not taken for a success: a prepare becomes a no vote, a decider's commit
// an unknown outcome that is settled later.

// errNotReplicated is the error a statement gets in that case.
var errNotReplicated = errors.New("the wait for the synchronous standby was cancelled: the server has it, its standby may not")

// unreplicatedConns records the data connections on which that warning
// came, until the statement that caused it is checked.
type unreplicatedConns struct{ m sync.Map }

var unreplicated unreplicatedConns

// note is the data pool's notice handler.
func (u *unreplicatedConns) note(pc *pgconn.PgConn, n *pgconn.Notice) {
	if strings.HasPrefix(n.Message, "canceling wait for synchronous replication") {
		u.m.Store(pc, struct{}{})
	}
}

// forget drops what was noted of pc, a connection being closed.
func (u *unreplicatedConns) forget(pc *pgconn.PgConn) { u.m.Delete(pc) }

// take reports whether pc got the warning since the last take, and forgets
// it.
func (u *unreplicatedConns) take(pc *pgconn.PgConn) bool {
	_, ok := u.m.LoadAndDelete(pc)
	return ok
}
