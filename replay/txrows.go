package replay

import (
	"context"
	"encoding/json"

	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/logstore"
)

// txEvent is one event of a transaction, read from the rows that hold it.
type txEvent struct {
	logstore.Record
	// ev is nil if the event does not decode.
	ev engine.Event
}

// kind is the event's kind, or what its envelope claims if it does not
// decode.
func (te txEvent) kind() string { return kindOf(te.Record, te.ev) }

// readTx returns node's events of transaction tx in log order. The log
// finds the rows that hold them; the events of other transactions appended
// with them are left out here.
func (r *runner) readTx(ctx context.Context, node string, tx uint64) ([]txEvent, error) {
	recs, err := r.store.TxRows(ctx, node, tx)
	if err != nil {
		return nil, err
	}
	var out []txEvent
	for _, rec := range recs {
		if rec.Tx != tx {
			continue
		}
		ev, err := engine.DecodeEvent(rec.Payload)
		if err != nil {
			ev = nil
		}
		out = append(out, txEvent{Record: rec, ev: ev})
	}
	return out, nil
}

// kindOf returns ev's kind or, for an event that does not decode (ev nil),
// the type its envelope claims, read leniently so that it can still be
// reported ("" if even that cannot be read).
func kindOf(rec logstore.Record, ev engine.Event) string {
	if ev != nil {
		return ev.Kind()
	}
	var env struct {
		Type string `json:"type"`
	}
	_ = json.Unmarshal(rec.Payload, &env) // fills what it can before an error
	return env.Type
}
