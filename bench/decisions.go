package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// insertDecisionsSQL writes a group's decision rows in one statement, so
// in one commit: one WAL flush for all of them.
const insertDecisionsSQL = "INSERT INTO bench_decisions (gid) SELECT unnest($1::text[])"

// maxDecisionGroup bounds the rows of one group write; more clients than
// that wait for the next write.
const maxDecisionGroup = 1024

// decisionGroup is the group-committed raw baseline's decision writer:
// transactions hand their GIDs to one goroutine, which writes every GID
// that is waiting in one INSERT on its own connection to the log server
// and answers each transaction when that commit is durable. While one
// write is on its way the next group gathers, as in a log that commits
// concurrent transactions' records with one flush (tpcd's own event log
// does).
type decisionGroup struct {
	uri      string
	timeout  time.Duration
	requests chan decisionRequest
	done     chan struct{}
	wg       sync.WaitGroup
}

// decisionRequest is one transaction's decision; reply receives the
// outcome of the write that carried it.
type decisionRequest struct {
	gid   string
	reply chan error
}

// errGroupClosed answers a decision asked for after the writer stopped.
var errGroupClosed = errors.New("the decision writer has stopped")

// startDecisionGroup starts the writer; waiting is how many transactions
// may queue for it without blocking (the number of clients), timeout
// bounds each write.
func startDecisionGroup(uri string, waiting int, timeout time.Duration) *decisionGroup {
	g := &decisionGroup{uri: uri, timeout: timeout, requests: make(chan decisionRequest, waiting), done: make(chan struct{})}
	g.wg.Add(1)
	go g.run()
	return g
}

// decide makes gid's decision durable. An error means the row may or may
// not have been written; the caller aborts, as with a failed forced
// insert.
func (g *decisionGroup) decide(ctx context.Context, gid string) error {
	req := decisionRequest{gid: gid, reply: make(chan error, 1)}
	select {
	case g.requests <- req:
	case <-g.done:
		return errGroupClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-req.reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g *decisionGroup) run() {
	defer g.wg.Done()
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	group := make([]decisionRequest, 0, maxDecisionGroup)
	gids := make([]string, 0, maxDecisionGroup)
	for {
		group, gids = group[:0], gids[:0]
		select {
		case req := <-g.requests:
			group = append(group, req)
		case <-g.done:
			return
		}
		// Everything that queued while the previous write was on its way
		// goes into this one; nothing waits for more to come.
	gather:
		for len(group) < maxDecisionGroup {
			select {
			case req := <-g.requests:
				group = append(group, req)
			default:
				break gather
			}
		}
		for _, req := range group {
			gids = append(gids, req.gid)
		}
		var err error
		conn, err = g.write(conn, gids)
		for _, req := range group {
			req.reply <- err
		}
	}
}

// write inserts gids in one statement, connecting first if the previous
// connection is gone or broke.
func (g *decisionGroup) write(conn *pgx.Conn, gids []string) (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), g.timeout)
	defer cancel()
	if conn == nil || conn.IsClosed() {
		var err error
		if conn, err = pgx.Connect(ctx, g.uri); err != nil {
			return nil, fmt.Errorf("decision writer: connect to the log database: %w", err)
		}
	}
	if _, err := conn.Exec(ctx, insertDecisionsSQL, gids); err != nil {
		if isConnErr(err) {
			conn.Close(context.Background())
		}
		return conn, fmt.Errorf("decision writer: insert %d decisions: %w", len(gids), err)
	}
	return conn, nil
}

// stop ends the writer once its current write is answered; decisions
// asked for later fail.
func (g *decisionGroup) stop() {
	close(g.done)
	g.wg.Wait()
}
