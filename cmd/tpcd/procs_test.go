package main

import (
	"runtime"
	"testing"

	"github.com/alecthomas/kong"
)

// Commands that start PostgreSQL servers on this machine leave them half
// the CPUs; others, and any explicit GOMAXPROCS, keep the runtime's choice.
func TestTuneProcs(t *testing.T) {
	// Four Ps to start from whatever this machine has, so halving shows.
	const before, half = 4, 2
	orig := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(orig) })

	for _, c := range []struct {
		args []string
		want int
	}{
		{[]string{"bench"}, half},
		{[]string{"bench", "--coordinator", "127.0.0.1:9990"}, before},
		{[]string{"cluster"}, half},
		{[]string{"coordinator", "--participant", "127.0.0.1:9991"}, half},
		{[]string{"coordinator", "--participant", "127.0.0.1:9991", "--log-db", "postgres://127.0.0.1/x"}, before},
		{[]string{"participant", "--node-id", "0", "--coordinator", "127.0.0.1:9990", "--log-db", "postgres://127.0.0.1/x"}, half},
		{[]string{"participant", "--node-id", "0", "--coordinator", "127.0.0.1:9990", "--log-db", "postgres://127.0.0.1/x", "--data-db", "postgres://127.0.0.1/y"}, before},
		{[]string{"replay", "--log-db", "postgres://127.0.0.1/x"}, before},
	} {
		t.Setenv("GOMAXPROCS", "")
		runtime.GOMAXPROCS(before)
		var cli CLI
		p, err := kong.New(&cli, kong.Name("tpcd"))
		if err != nil {
			t.Fatal(err)
		}
		kctx, err := p.Parse(c.args)
		if err != nil {
			t.Fatalf("parse %v: %v", c.args, err)
		}
		tuneProcs(kctx.Selected().Target.Addr().Interface())
		if got := runtime.GOMAXPROCS(0); got != c.want {
			t.Errorf("%v: GOMAXPROCS %d, want %d (of %d)", c.args, got, c.want, before)
		}
	}

	t.Setenv("GOMAXPROCS", "7")
	runtime.GOMAXPROCS(before)
	tuneProcs(&ClusterCmd{})
	if got := runtime.GOMAXPROCS(0); got != before {
		t.Errorf("with GOMAXPROCS set: %d, want %d untouched", got, before)
	}
}
