package logstore

import (
	"context"
	"errors"
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
	// Outcome is "commit" or "abort" (engine.Outcome's names).
	Outcome string
	// Reason is why an abort happened; empty for a commit.
	Reason string
	// Keys are the idempotency keys the transaction's clients gave it.
	Keys []string
}

// SaveOutcomes stores outcomes in one transaction; an outcome stored before
// stays as it was. It must return before the events of those transactions
// are compacted away, or a crash in between would lose their outcome.
func (s *Store) SaveOutcomes(ctx context.Context, outcomes []Outcome) error {
	if len(outcomes) == 0 {
		return nil
	}
	n := len(outcomes)
	rows := queries.OutcomesSaveParams{Txs: make([]int64, 0, n), EndedAt: make([]time.Time, 0, n), Outcomes: make([]string, 0, n), Reasons: make([]string, 0, n)}
	var keys queries.OutcomeKeysSaveParams
	for _, o := range outcomes {
		if o.Tx == 0 || o.Tx > math.MaxInt64 {
			return fmt.Errorf("save outcome of tx %d: not a transaction id", o.Tx)
		}
		rows.Txs = append(rows.Txs, int64(o.Tx))
		rows.EndedAt = append(rows.EndedAt, o.EndedAt)
		rows.Outcomes = append(rows.Outcomes, o.Outcome)
		rows.Reasons = append(rows.Reasons, o.Reason)
		for _, k := range o.Keys {
			keys.Keys = append(keys.Keys, k)
			keys.Txs = append(keys.Txs, int64(o.Tx))
		}
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := s.q.OutcomesSave(ctx, tx, rows); err != nil {
			return err
		}
		if len(keys.Keys) == 0 {
			return nil
		}
		return s.q.OutcomeKeysSave(ctx, tx, keys)
	})
	if err != nil {
		return fmt.Errorf("save %d outcomes: %w", n, err)
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
		found[r.Key] = Outcome{Tx: uint64(r.Tx), Outcome: r.Outcome, Reason: r.Reason, Keys: []string{r.Key}}
	}
	return found, nil
}

// OutcomeByTx finds the outcome of transaction tx; ok is false when none is
// kept.
func (s *Store) OutcomeByTx(ctx context.Context, tx uint64) (o Outcome, ok bool, err error) {
	if tx == 0 || tx > math.MaxInt64 {
		return Outcome{}, false, nil
	}
	r, err := s.q.OutcomeByTx(ctx, s.pool, int64(tx))
	if errors.Is(err, pgx.ErrNoRows) {
		return Outcome{}, false, nil
	}
	if err != nil {
		return Outcome{}, false, fmt.Errorf("outcome of tx %d: %w", tx, err)
	}
	return Outcome{Tx: uint64(r.Tx), EndedAt: r.EndedAt, Outcome: r.Outcome, Reason: r.Reason}, true, nil
}

// PruneOutcomes deletes the outcomes of transactions that ended before
// before, with their keys, and returns how many it deleted.
func (s *Store) PruneOutcomes(ctx context.Context, before time.Time) (int64, error) {
	n, err := s.q.OutcomesPrune(ctx, s.pool, before)
	if err != nil {
		return 0, fmt.Errorf("prune outcomes ended before %s: %w", before.Format(time.RFC3339), err)
	}
	return n, nil
}

// OutcomesHorizon is the largest transaction id whose outcome PruneOutcomes
// deleted (0 if none): no kept outcome is the only sign that a larger id
// ended before anything of it was logged.
func (s *Store) OutcomesHorizon(ctx context.Context) (uint64, error) {
	h, err := s.q.OutcomesHorizon(ctx, s.pool)
	if err != nil {
		return 0, fmt.Errorf("outcomes horizon: %w", err)
	}
	return uint64(h), nil
}
