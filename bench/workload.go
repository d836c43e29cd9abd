package bench

import (
	"math/rand/v2"
	"sync/atomic"
)

// The workload's SQL. Every statement is one upsert, so a hot key that two
// transactions write makes the second wait for the first's lock instead of
// failing, as a real contended workload would.
const (
	// UpsertSQL is the statement every transaction runs S times.
	UpsertSQL = "INSERT INTO bench_kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"
	// CreateTableSQL creates the table on each participant.
	CreateTableSQL = "CREATE TABLE IF NOT EXISTS bench_kv (k bigint PRIMARY KEY, v bigint NOT NULL)"
	// CreateDecisionsSQL creates the raw baseline's decision log on the
	// coordinator's log server.
	CreateDecisionsSQL = "CREATE TABLE IF NOT EXISTS bench_decisions (gid text PRIMARY KEY, decided_at timestamptz NOT NULL DEFAULT now())"
	insertDecisionSQL  = "INSERT INTO bench_decisions (gid) VALUES ($1)"
)

// Unique keys are a run's nonce followed by a counter, so that runs against
// the same tables never write each other's keys; hot keys are the small
// numbers below that. Keys stay below 2^53 because tpcd carries arguments
// as JSON numbers, which are exact only up to there.
const (
	nonceBits   = 20
	counterBits = 32
)

// stmt is one upsert of a planned transaction.
type stmt struct {
	node int
	key  int64
	val  int64
}

// keySource hands out keys for one run; it is shared by all clients.
type keySource struct {
	nonce   int64
	counter atomic.Int64
	hotFrac float64
	hotKeys int64
}

func newKeySource(hotFrac float64, hotKeys int) *keySource {
	return &keySource{
		nonce:   1 + rand.Int64N(1<<nonceBits-1),
		hotFrac: hotFrac,
		hotKeys: int64(hotKeys),
	}
}

// planner builds transactions for one client; it is not shared.
type planner struct {
	keys  *keySource
	rng   *rand.Rand
	nodes int
	stmts int
	buf   []stmt
	// oneNode puts each transaction's statements on one participant, the
	// next one round robin after the previous transaction's (from a
	// random one): the plain local baseline's transactions.
	oneNode bool
	last    int
}

func newPlanner(keys *keySource, nodes, stmts int, oneNode bool) *planner {
	p := &planner{
		keys:    keys,
		rng:     rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
		nodes:   nodes,
		stmts:   stmts,
		buf:     make([]stmt, stmts),
		oneNode: oneNode,
	}
	p.last = p.rng.IntN(nodes)
	return p
}

// next plans a transaction: statement j goes to participant (first+j) mod
// N, so S ≥ N touches every participant and S < N a random subset of
// neighbours; with oneNode every statement goes to first. The returned
// slice is reused by the next call.
func (p *planner) next() []stmt {
	var first, step int
	if p.oneNode {
		p.last = (p.last + 1) % p.nodes
		first = p.last
	} else {
		first, step = p.rng.IntN(p.nodes), 1
	}
	for j := range p.buf {
		s := &p.buf[j]
		s.node = (first + j*step) % p.nodes
		if p.keys.hotFrac > 0 && p.rng.Float64() < p.keys.hotFrac {
			s.key = p.rng.Int64N(p.keys.hotKeys)
		} else {
			s.key = p.keys.nonce<<counterBits | p.keys.counter.Add(1)
		}
		s.val = p.rng.Int64N(1 << 40)
	}
	return p.buf
}
