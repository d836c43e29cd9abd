package node

import (
	"slices"
	"testing"
	"time"

	"github.com/tpcd/tpcd/engine"
)

// drainNegativesPatiently drains a queue whose negative items are patient
// for patience, handing each batch sent to the returned channel, until the
// test ends.
func drainNegativesPatiently(t *testing.T, patience time.Duration) (*batchQueue[int], <-chan []int) {
	q := newBatchQueue[int]()
	q.patient, q.patience = func(v int) bool { return v < 0 }, patience
	sent := make(chan []int, 4)
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	go q.drain(done, 10, nil, func(b []int) { sent <- slices.Clone(b) })
	return q, sent
}

// A patient item waits for company: one that arrives later leaves in the
// same batch, and the patient one never goes alone first.
func TestBatchQueuePatientItemWaitsForCompany(t *testing.T) {
	q, sent := drainNegativesPatiently(t, time.Hour)

	q.push(-1, 0)
	q.push(-2, 0)
	select {
	case b := <-sent:
		t.Fatalf("patient items sent alone: %v", b)
	case <-time.After(50 * time.Millisecond):
	}
	q.push(3, 0)
	select {
	case b := <-sent:
		if !slices.Equal(b, []int{-1, -2, 3}) {
			t.Fatalf("batch %v, want [-1 -2 3]", b)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("nothing sent after an impatient item arrived")
	}
}

// Alone, patient items leave once their patience is up, and the next
// impatient item is not held at all.
func TestBatchQueuePatientItemsLeaveAlone(t *testing.T) {
	q, sent := drainNegativesPatiently(t, time.Millisecond)

	for _, v := range []int{-1, 2} {
		q.push(v, 0)
		select {
		case b := <-sent:
			if !slices.Equal(b, []int{v}) {
				t.Fatalf("batch %v, want [%d]", b, v)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%d never sent", v)
		}
	}
}

// Of the messages a node sends, only acknowledgements may wait, and not
// those a client waits for.
func TestOnlyAcksArePatient(t *testing.T) {
	o := newOutbox(0, nil, nil, nil, nil)
	for _, c := range []struct {
		m    engine.Message
		want bool
	}{
		{engine.AckMessage{TxID: 1}, true},
		{engine.AckMessage{TxID: 1, Prompt: true}, false},
		{engine.ExecRequest{TxID: 1}, false},
		{engine.ExecResult{TxID: 1}, false},
		{engine.PrepareRequest{TxID: 1}, false},
		{engine.VoteMessage{TxID: 1}, false},
		{engine.DecisionRequest{TxID: 1}, false},
		{engine.InquireMessage{TxID: 1}, false},
	} {
		if got := o.queue.patient(c.m); got != c.want {
			t.Errorf("%s patient = %t, want %t", c.m.Method(), got, c.want)
		}
	}
}
