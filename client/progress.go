package client

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// progressBar draws one self-overwriting line on a terminal: how far
// through the file a load is, rows committed and the rate.
type progressBar struct {
	w     io.Writer
	size  int64 // file size in bytes, 0 if unknown
	start time.Time
	label string
	last  time.Time
	drawn bool
}

const barWidth = 30

// update redraws the bar at most ten times a second unless force is set.
func (p *progressBar) update(rows, offset int64, force bool) {
	now := time.Now()
	if !force && now.Sub(p.last) < 100*time.Millisecond {
		return
	}
	p.last = now
	rate := 0.0
	if secs := now.Sub(p.start).Seconds(); secs > 0 {
		rate = float64(rows) / secs
	}
	frac := 0.0
	if p.size > 0 {
		frac = min(float64(offset)/float64(p.size), 1)
	}
	filled := int(frac * barWidth)
	bar := strings.Repeat("#", filled) + strings.Repeat("-", barWidth-filled)
	fmt.Fprintf(p.w, "\r\x1b[K%s [%s] %3.0f%%  %d rows  %.0f rows/s", p.label, bar, frac*100, rows, rate)
	p.drawn = true
}

// clear removes the bar so the summary starts on a clean line.
func (p *progressBar) clear() {
	if p.drawn {
		fmt.Fprint(p.w, "\r\x1b[K")
	}
}
