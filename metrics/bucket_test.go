package metrics

import (
	"testing"
	"time"
)

func TestBucket(t *testing.T) {
	now := time.Unix(1000, 0)
	b := newBucket(2, 3, func() time.Time { return now })
	took := func(n int) int {
		ok := 0
		for range n {
			if b.take() {
				ok++
			}
		}
		return ok
	}
	if got := took(10); got != 3 {
		t.Fatalf("a full bucket let %d of 10 through, want its burst of 3", got)
	}
	now = now.Add(time.Second)
	if got := took(10); got != 2 {
		t.Fatalf("a second later %d went through, want the rate of 2", got)
	}
	now = now.Add(time.Hour)
	if got := took(10); got != 3 {
		t.Fatalf("after an hour %d went through, want no more than the burst of 3", got)
	}
	now = now.Add(-time.Minute) // a clock stepped back adds nothing
	if got := took(1); got != 0 {
		t.Fatalf("after the clock stepped back %d went through, want 0", got)
	}
}
