package logstore

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tpcd/tpcd/queries"
)

// Outcome is how a transaction a coordinator ended turned out, kept apart
// from the log so that it outlives compaction.
type Outcome struct {
	Tx      uint64
	EndedAt time.Time
	// Committed is false for an abort.
	Committed bool
	// Reason is why an abort happened; empty for a commit.
	Reason string
	// Keys are the idempotency keys the transaction's clients gave it.
	Keys []string
}

// SaveOutcomes stores outcomes in one transaction, as one row and a row per
// key. It must return before the events of those transactions are
// compacted away, or a crash in between would lose their outcome. Saving an
// outcome again adds a row that agrees with the first.
func (s *Store) SaveOutcomes(ctx context.Context, outcomes []Outcome) error {
	if len(outcomes) == 0 {
		return nil
	}
	row := queries.OutcomesSaveParams{FirstTx: math.MaxInt64, Committed: []int64{}, Aborted: []int64{}, Reasons: []string{}}
	keys := queries.OutcomeKeysSaveParams{}
	for _, o := range outcomes {
		if o.Tx == 0 || o.Tx > math.MaxInt64 {
			return fmt.Errorf("save outcome of tx %d: not a transaction id", o.Tx)
		}
		tx := int64(o.Tx)
		row.FirstTx, row.LastTx = min(row.FirstTx, tx), max(row.LastTx, tx)
		if o.EndedAt.After(row.EndedAt) {
			row.EndedAt = o.EndedAt
		}
		if o.Committed {
			row.Committed = append(row.Committed, tx)
		} else {
			row.Aborted = append(row.Aborted, tx)
			row.Reasons = append(row.Reasons, o.Reason)
		}
		for _, k := range o.Keys {
			keys.Keys = append(keys.Keys, k)
			keys.Txs = append(keys.Txs, tx)
			keys.Committed = append(keys.Committed, o.Committed)
			keys.Reasons = append(keys.Reasons, o.Reason)
		}
	}
	keys.EndedAt = row.EndedAt
	// Once saved, compaction may delete the transactions' events: the
	// outcomes must be as durable as the events were.
	err := s.durably(ctx, func(conn *pgx.Conn) error {
		return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if err := s.q.OutcomesSave(ctx, tx, row); err != nil {
				return err
			}
			if len(keys.Keys) == 0 {
				return nil
			}
			return s.q.OutcomeKeysSave(ctx, tx, keys)
		})
	})
	if err != nil {
		return fmt.Errorf("save %d outcomes: %w", len(outcomes), err)
	}
	return nil
}

// OutcomesByKey finds the transactions keys named among the outcomes kept,
// by key; a key not found is absent from the map.
func (s *Store) OutcomesByKey(ctx context.Context, keys []string) (map[string]Outcome, error) {
	rows, err := s.q.OutcomesByKey(ctx, s.pool, keys)
	if err != nil {
		return nil, fmt.Errorf("look up %d keys: %w", len(keys), err)
	}
	found := make(map[string]Outcome, len(rows))
	for _, r := range rows {
		found[r.Key] = Outcome{Tx: uint64(r.Tx), Committed: r.Committed, Reason: r.Reason, Keys: []string{r.Key}}
	}
	return found, nil
}

// OutcomeKeysCount counts the idempotency keys kept.
func (s *Store) OutcomeKeysCount(ctx context.Context) (int64, error) {
	n, err := s.q.OutcomeKeysCount(ctx, s.pool)
	if err != nil {
		return 0, fmt.Errorf("count kept keys: %w", err)
	}
	return n, nil
}

// OutcomeKeysAfter lists, in order, up to n kept keys that sort after
// after ("" for the first page).
func (s *Store) OutcomeKeysAfter(ctx context.Context, after string, n int) ([]string, error) {
	keys, err := s.q.OutcomeKeysAfter(ctx, s.pool, queries.OutcomeKeysAfterParams{After: after, N: int32(n)})
	if err != nil {
		return nil, fmt.Errorf("list kept keys after %q: %w", after, err)
	}
	return keys, nil
}

// OutcomeByTx finds the outcome of transaction tx; ok is false when none is
// kept.
func (s *Store) OutcomeByTx(ctx context.Context, tx uint64) (o Outcome, ok bool, err error) {
	if tx == 0 || tx > math.MaxInt64 {
		return Outcome{}, false, nil
	}
	r, err := s.q.OutcomeByTx(ctx, s.pool, queries.OutcomeByTxParams{Tx: int64(tx), EndTx: s.txEnd(), FirstTx: int64(s.firstTx)})
	if err != nil {
		return Outcome{}, false, fmt.Errorf("outcome of tx %d: %w", tx, err)
	}
	if r.Committed && r.Aborted {
		return Outcome{}, false, fmt.Errorf("outcome of tx %d: kept as committed and as aborted", tx)
	}
	if !r.Committed && !r.Aborted {
		return Outcome{}, false, nil
	}
	return Outcome{Tx: tx, Committed: r.Committed, Reason: r.Reason}, true, nil
}

// PruneOutcomes deletes the outcomes of transactions that ended before
// before, with their keys, and returns how many rows it deleted: of the ids
// s touches (ForSlot).
func (s *Store) PruneOutcomes(ctx context.Context, before time.Time) (int64, error) {
	n, err := s.q.OutcomesPrune(ctx, s.pool, queries.OutcomesPruneParams{Before: before, FirstTx: int64(s.firstTx), EndTx: s.txEnd(), Slot: int32(s.slot)})
	if err != nil {
		return 0, fmt.Errorf("prune outcomes ended before %s: %w", before.Format(time.RFC3339), err)
	}
	return n, nil
}

// OutcomesHorizon is the largest transaction id of s's slot whose outcome
// PruneOutcomes deleted (0 if none): no kept outcome is the only sign that a larger id
// ended before anything of it was logged.
func (s *Store) OutcomesHorizon(ctx context.Context) (uint64, error) {
	h, err := s.q.OutcomesHorizon(ctx, s.pool, int32(s.slot))
	if err != nil {
		return 0, fmt.Errorf("outcomes horizon: %w", err)
	}
	return uint64(h), nil
}
