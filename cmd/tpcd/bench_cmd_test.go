package main

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/alecthomas/kong"

	"github.com/tpcd/tpcd/bench"
)

// --baseline takes a list, comma-separated or repeated, of the baselines
// bench knows; --warmup 0 means no warm-up.
func TestBenchFlags(t *testing.T) {
	parse := func(args ...string) (*BenchCmd, error) {
		var cli CLI
		p, err := kong.New(&cli, kong.Name("tpcd"))
		if err != nil {
			t.Fatal(err)
		}
		kctx, err := p.Parse(append([]string{"bench"}, args...))
		if err != nil {
			return nil, err
		}
		return kctx.Selected().Target.Addr().Interface().(*BenchCmd), nil
	}

	c, err := parse("--baseline", "raw,local", "--baseline", "raw-grouped", "--warmup", "0")
	if err != nil {
		t.Fatal(err)
	}
	o := c.options()
	if want := []string{bench.BaselineRaw, bench.BaselineLocal, bench.BaselineRawGrouped}; !slices.Equal(o.Baselines, want) {
		t.Errorf("baselines %v, want %v", o.Baselines, want)
	}
	if o.Warmup >= 0 {
		t.Errorf("--warmup 0 gives a warm-up of %v; want none (negative)", o.Warmup)
	}

	c, err = parse()
	if err != nil {
		t.Fatal(err)
	}
	if o := c.options(); !slices.Equal(o.Baselines, []string{bench.BaselineNone}) {
		t.Errorf("default baselines %v, want none", o.Baselines)
	}

	// pgbench's -P and --rate.
	c, err = parse("-P", "2", "--rate", "50", "--schedule", "fixed", "--latency-limit", "100ms")
	if err != nil {
		t.Fatal(err)
	}
	if o := c.options(); o.ProgressEvery != 2*time.Second || o.Rate != 50 || o.Schedule != bench.ScheduleFixed || o.LatencyLimit != 100*time.Millisecond {
		t.Errorf("progress %v, rate %g, schedule %q, latency limit %v", o.ProgressEvery, o.Rate, o.Schedule, o.LatencyLimit)
	}
	if _, err := parse("--rate", "-1"); err == nil || !strings.Contains(err.Error(), "rate") {
		t.Errorf("a negative rate: %v", err)
	}

	if _, err := parse("--baseline", "raw,fast"); err == nil || !strings.Contains(err.Error(), "fast") {
		t.Errorf("an unknown baseline: %v", err)
	}

	// The local baseline against a running cluster needs the data
	// servers, not the log server (kong runs Validate as it parses).
	if _, err := parse("--coordinator", "127.0.0.1:9990", "--baseline", "local"); err == nil || !strings.Contains(err.Error(), "--data-db") {
		t.Errorf("local baseline without --data-db: %v", err)
	}
	if _, err := parse("--coordinator", "127.0.0.1:9990", "--baseline", "local", "--data-db", "postgres://127.0.0.1/a"); err != nil {
		t.Errorf("local baseline with --data-db refused: %v", err)
	}
}
