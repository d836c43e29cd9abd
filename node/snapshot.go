package node

import (
	"context"
	"fmt"
	"time"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
)

// RecentOutcomes is how many ended transactions a snapshot lists.
const RecentOutcomes = 20

// CoordinatorSnapshot is a consistent picture of a coordinator for
// operators (the status page). It is a copy: nothing in it changes later.
type CoordinatorSnapshot struct {
	Cluster string
	Epoch   engine.Epoch
	Taken   time.Time
	// Participants are the participants' health, by node id.
	Participants []api.NodeHealth
	// InFlight are the transactions the coordinator holds in memory, by id.
	InFlight []engine.TxSummary
	// InDoubt is the part of InFlight whose participants may be prepared
	// and waiting for the outcome: votes being collected, or a decision not
	// yet acknowledged by everyone.
	InDoubt []engine.TxSummary
	// Recent are the latest transactions to end, newest first.
	Recent []engine.StatusReply
	// Committed and Aborted count the transactions that ended (acknowledged
	// everywhere, or decided with nobody to tell) since this process started.
	Committed, Aborted uint64
}

// outcomeCounts are kept on the loop goroutine.
type outcomeCounts struct{ committed, aborted uint64 }

func (o *outcomeCounts) add(txs []engine.StatusReply) {
	for _, t := range txs {
		switch t.Outcome {
		case engine.OutcomeCommit:
			o.committed++
		case engine.OutcomeAbort:
			o.aborted++
		}
	}
}

// Snapshot reads the coordinator's state on its loop goroutine, the only
// place the engine may be read, and returns a copy.
func (c *Coordinator) Snapshot(ctx context.Context) (CoordinatorSnapshot, error) {
	s := CoordinatorSnapshot{Cluster: c.cluster, Epoch: c.epoch, Taken: time.Now(), Participants: c.Nodes()}
	err := c.loop.query(ctx, func() {
		s.InFlight = c.eng.Transactions()
		recent := c.eng.RecentEnded(RecentOutcomes)
		for i := len(recent) - 1; i >= 0; i-- {
			s.Recent = append(s.Recent, recent[i])
		}
		s.Committed, s.Aborted = c.counts.committed, c.counts.aborted
	})
	if err != nil {
		return CoordinatorSnapshot{}, fmt.Errorf("coordinator snapshot: %w", err)
	}
	for _, tx := range s.InFlight {
		if tx.State == engine.PhasePreparing.String() || len(tx.Pending) > 0 {
			s.InDoubt = append(s.InDoubt, tx)
		}
	}
	return s, nil
}

// ParticipantSnapshot is what a participant holds, for metrics.
type ParticipantSnapshot struct {
	// Open counts transactions with work that is neither prepared nor
	// finished; InDoubt counts prepared ones waiting for the decision.
	Open, InDoubt int
}

// Snapshot reads the participant's state on its loop goroutine: of every
// slot's engine, where several coordinators serve at once, so that what
// waits on the participant is counted whichever slot it belongs to.
func (p *Participant) Snapshot(ctx context.Context) (ParticipantSnapshot, error) {
	var s ParticipantSnapshot
	for _, q := range p.slots {
		err := q.loop.query(ctx, func() {
			for _, tx := range q.eng.Transactions() {
				switch tx.Phase {
				case engine.PartPhasePrepared:
					s.InDoubt++
				case engine.PartPhaseWorking, engine.PartPhasePreparing:
					s.Open++
				}
			}
		})
		if err != nil {
			return ParticipantSnapshot{}, fmt.Errorf("participant snapshot of %s: %w", q.name, err)
		}
	}
	return s, nil
}
