package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
)

// stepOrder is the order steps happen in, for printing.
var stepOrder = []string{"begin", "exec", "transact", "prepare", "decision", "commit", "commit prepared"}

// WriteJSON writes the report as one indented JSON document.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the report for people: the setup, one row per mode,
// the ratios, and why transactions aborted.
func (r *Report) WriteText(w io.Writer) error {
	c := r.Config
	where := "running cluster at " + c.Coordinator
	if c.StartedCluster {
		where = fmt.Sprintf("local cluster started in this process (embedded PostgreSQL, default durability, %d connections per pool)", c.MaxConns)
		if c.LazyPrepared {
			where += ", participants with lazy Prepared events"
		}
	}
	fmt.Fprintf(w, "%s\n", where)
	span := fmt.Sprintf("%.0fs", c.DurationSec)
	if c.Transactions > 0 {
		span = fmt.Sprintf("%d transactions", c.Transactions)
	}
	fmt.Fprintf(w, "participants=%d form=%s transport=%s clients=%d connections=%d statements/tx=%d hot-fraction=%g (of %d keys) measured=%s after %.0fs warm-up\n\n",
		c.Participants, c.Form, c.Transport, c.Concurrency, c.Connections, c.Statements, c.HotFraction, c.HotKeys, span, c.WarmupSec)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\tcommitted/s\taborted/s\tstatements/s\tp50 ms\tp95 ms\tp99 ms\tmax ms\tcommitted\taborted\tfailed\t")
	for _, res := range []*Result{r.TPCD, r.Raw} {
		if res == nil {
			continue
		}
		l := res.Latency
		fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%.1f\t%.2f\t%.2f\t%.2f\t%.2f\t%d\t%d\t%d\t\n",
			res.Mode, res.CommittedPerSec, res.AbortedPerSec, res.StatementsPerSec,
			l.P50, l.P95, l.P99, l.Max, res.Committed, res.Aborted, res.Failed)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nlatency by step of committed transactions (p50 / p99 ms):")
	for _, res := range []*Result{r.TPCD, r.Raw} {
		if res == nil || len(res.Steps) == 0 {
			continue
		}
		fmt.Fprintf(w, "  %-5s", res.Mode)
		for _, name := range stepOrder {
			if l, ok := res.Steps[name]; ok {
				fmt.Fprintf(w, "  %s %.2f / %.2f", name, l.P50, l.P99)
			}
		}
		fmt.Fprintln(w)
	}

	fmt.Fprintln(w, "\nwork per committed transaction:")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\tCPU ms (this process)\tWAL fsyncs\tPG commits\tWAL bytes\t")
	for _, res := range []*Result{r.TPCD, r.Raw} {
		if res == nil || res.Costs == nil {
			continue
		}
		c := res.Costs
		fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.2f\t%.0f\t\n", res.Mode, c.ProcessCPUMsPerTx, c.WALSyncsPerTx, c.PGCommitsPerTx, c.WALBytesPerTx)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(r.Rounds) > 1 {
		if err := r.writeRounds(w); err != nil {
			return err
		}
	}
	if r.Ratio != nil {
		fmt.Fprintf(w, "\ntpcd/raw: throughput %.2fx, p50 %.2fx, p99 %.2fx\n", r.Ratio.Throughput, r.Ratio.P50, r.Ratio.P99)
		if r.RawLeftoverPrepared > 0 {
			fmt.Fprintf(w, "WARNING: the raw baseline left %d prepared transactions behind\n", r.RawLeftoverPrepared)
		}
	}
	m := r.Memory
	fmt.Fprintf(w, "\npeak RSS of this process: %.0f MiB", m.ProcessPeakMB)
	if c.StartedCluster {
		fmt.Fprint(w, " (bench clients and every node)")
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "machine: %d CPUs (GOMAXPROCS %d), load average %.1f before, %.1f after\n", r.Machine.CPUs, r.Config.GOMAXPROCS, r.Machine.LoadBefore, r.Machine.LoadAfter)
	if m.WatchedPID > 0 {
		fmt.Fprintf(w, "peak RSS of pid %d during the measurements: %.0f MiB\n", m.WatchedPID, m.WatchedPeakMB)
	}
	for _, res := range []*Result{r.TPCD, r.Raw} {
		if res == nil || len(res.Reasons) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s aborts and failures by reason:\n", res.Mode)
		for _, k := range topReasons(res.Reasons) {
			fmt.Fprintf(w, "  %6d  %s\n", res.Reasons[k], k)
		}
	}
	return nil
}

// writeRounds lists every round; the figures above are the median round's.
func (r *Report) writeRounds(w io.Writer) error {
	median := medianRound(r.Rounds)
	fmt.Fprintf(w, "\n%d rounds (the figures above are the median round's, marked *; p50 and CPU per transaction in ms):\n", len(r.Rounds))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	if r.Raw != nil {
		fmt.Fprintln(tw, "round\ttpcd/s\traw/s\ttpcd/raw\tp50 tpcd\tp50 raw\tp99 ratio\tCPU tpcd\tCPU raw\t")
	} else {
		fmt.Fprintln(tw, "round\ttpcd/s\tp50\tp99\tCPU\t")
	}
	for i, rd := range r.Rounds {
		mark := ""
		if rd.TPCD == median.TPCD {
			mark = "*"
		}
		t := rd.TPCD
		if rd.Raw == nil {
			fmt.Fprintf(tw, "%d%s\t%.1f\t%.2f\t%.2f\t%.2f\t\n", i+1, mark, t.CommittedPerSec, t.Latency.P50, t.Latency.P99, cpuPerTx(t))
			continue
		}
		fmt.Fprintf(tw, "%d%s\t%.1f\t%.1f\t%.2fx\t%.2f\t%.2f\t%.2fx\t%.2f\t%.2f\t\n", i+1, mark,
			t.CommittedPerSec, rd.Raw.CommittedPerSec, rd.Ratio.Throughput,
			t.Latency.P50, rd.Raw.Latency.P50, rd.Ratio.P99, cpuPerTx(t), cpuPerTx(rd.Raw))
	}
	return tw.Flush()
}

func cpuPerTx(r *Result) float64 {
	if r.Costs == nil {
		return 0
	}
	return r.Costs.ProcessCPUMsPerTx
}
