package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
)

// stepOrder is the order steps happen in, for printing.
var stepOrder = []string{"begin", "exec", "transact", "plain", "prepare", "decision", "commit", "commit prepared"}

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
	fmt.Fprintf(w, "participants=%d form=%s transport=%s clients=%d connections=%d statements/tx=%d hot-fraction=%g (of %d keys) measured=%s after %.0fs warm-up\n",
		c.Participants, c.Form, c.Transport, c.Concurrency, c.Connections, c.Statements, c.HotFraction, c.HotKeys, span, c.WarmupSec)
	if c.Rate > 0 {
		fmt.Fprintf(w, "arrivals: %g/s on a %s schedule; latency counts from each transaction's due time, waiting for a free client included\n", c.Rate, c.Schedule)
	}
	fmt.Fprintln(w)

	results := r.results()
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\tcommitted/s\taborted/s\tstatements/s\tp50 ms\tp95 ms\tp99 ms\tmax ms\tcommitted\taborted\tfailed\t")
	for _, res := range results {
		l := res.Latency
		fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%.1f\t%.2f\t%.2f\t%.2f\t%.2f\t%d\t%d\t%d\t\n",
			res.Mode, res.CommittedPerSec, res.AbortedPerSec, res.StatementsPerSec,
			l.P50, l.P95, l.P99, l.Max, res.Committed, res.Aborted, res.Failed)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	width := 0
	for _, res := range results {
		width = max(width, len(res.Mode))
	}
	writeSchedule(w, results, width)
	fmt.Fprintln(w, "\nlatency by step of committed transactions (p50 / p99 ms):")
	for _, res := range results {
		if len(res.Steps) == 0 {
			continue
		}
		fmt.Fprintf(w, "  %-*s", width, res.Mode)
		for _, name := range stepOrder {
			if l, ok := res.Steps[name]; ok {
				fmt.Fprintf(w, "  %s %.2f / %.2f", name, l.P50, l.P99)
			}
		}
		fmt.Fprintln(w)
	}

	fmt.Fprintln(w, "\nwork per committed transaction (CPU: user + system ms; all processes: this one, the cluster's node processes and PostgreSQL servers on this machine):")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\tCPU ms (this process)\tCPU ms (all processes)\tof it postgres\tof it node processes\tprocesses (postgres + tpcd)\tcontext switches\tWAL fsyncs\tPG commits\tWAL bytes\t")
	for _, res := range results {
		if res.Costs == nil {
			continue
		}
		c := res.Costs
		fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.2f\t%.2f\t%d + %d\t%.1f\t%.2f\t%.2f\t%.0f\t\n", res.Mode, c.ProcessCPUMsPerTx,
			c.MachineCPUMsPerTx, c.PostgresCPUMsPerTx, c.TPCDProcessesCPUMsPerTx, c.PostgresProcesses, c.TPCDProcesses,
			c.ContextSwitchesPerTx, c.WALSyncsPerTx, c.PGCommitsPerTx, c.WALBytesPerTx)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	writeBySecond(w, results, width)
	if len(r.Rounds) > 1 {
		if err := r.writeRounds(w); err != nil {
			return err
		}
	}
	if len(r.Baselines) > 0 {
		fmt.Fprintln(w)
	}
	for _, b := range r.Baselines {
		q := r.Ratios[b.Mode]
		if q == nil {
			continue
		}
		fmt.Fprintf(w, "tpcd/%s: throughput %.2fx, p50 %.2fx, p99 %.2fx, CPU of all processes %.2fx\n", b.Mode, q.Throughput, q.P50, q.P99, q.MachineCPU)
	}
	if r.RawLeftoverPrepared > 0 {
		fmt.Fprintf(w, "WARNING: the raw baselines left %d prepared transactions behind\n", r.RawLeftoverPrepared)
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
	for _, res := range results {
		if len(res.Reasons) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s aborts and failures by reason:\n", res.Mode)
		for _, k := range topReasons(res.Reasons) {
			fmt.Fprintf(w, "  %6d  %s\n", res.Reasons[k], k)
		}
	}
	return nil
}

// writeSchedule prints how well each result kept its arrival schedule and
// how many transactions were over the latency limit.
func writeSchedule(w io.Writer, results []*Result, width int) {
	printed := false
	for _, res := range results {
		if res.Schedule == nil && res.LatencyLimitMS == 0 {
			continue
		}
		if !printed {
			fmt.Fprintln(w, "\nschedule (lag: due time to start, waiting for a free client):")
			printed = true
		}
		fmt.Fprintf(w, "  %-*s ", width, res.Mode)
		if sc := res.Schedule; sc != nil {
			fmt.Fprintf(w, " %g/s %s: lag mean %.2f ms, p99 %.2f ms, max %.2f ms; %d skipped;", sc.Rate, sc.Kind, sc.Lag.Mean, sc.Lag.P99, sc.Lag.Max, sc.Skipped)
		}
		if res.LatencyLimitMS > 0 {
			fmt.Fprintf(w, " %d committed over the %g ms limit", res.Late, res.LatencyLimitMS)
		}
		fmt.Fprintln(w)
	}
}

// results lists tpcd's result and the baselines', in the order measured.
func (r *Report) results() []*Result {
	var out []*Result
	if r.TPCD != nil {
		out = append(out, r.TPCD)
	}
	return append(out, r.Baselines...)
}

// maxBySecondColumns bounds the rates printed on one line; a longer
// measurement prints the mean rate of steps of several seconds.
const maxBySecondColumns = 30

// writeBySecond prints each result's committed rate second by second, and
// its first seconds against the later ones, where a start-up tail shows.
func writeBySecond(w io.Writer, results []*Result, width int) {
	printed := false
	for _, res := range results {
		n := len(res.CommittedBySecond)
		if n == 0 {
			continue
		}
		step := (n + maxBySecondColumns - 1) / maxBySecondColumns
		if !printed {
			unit := "each second"
			if step > 1 {
				unit = fmt.Sprintf("mean of each %d s", step)
			}
			fmt.Fprintf(w, "\ncommitted/s over the measurement (%s; the last may be part of a second):\n", unit)
			printed = true
		}
		fmt.Fprintf(w, "  %-*s ", width, res.Mode)
		for i := 0; i < n; i += step {
			part := res.CommittedBySecond[i:min(i+step, n)]
			var sum int64
			for _, v := range part {
				sum += v
			}
			fmt.Fprintf(w, " %d", sum/int64(len(part)))
		}
		if st := res.Startup; st != nil {
			fmt.Fprintf(w, "  | first %d s %.0f/s, later %.0f/s: %.2fx", st.FirstSeconds, st.FirstPerSec, st.LaterPerSec, st.Ratio)
		}
		fmt.Fprintln(w)
	}
}

// writeRounds lists every round; the figures above are the median round's.
func (r *Report) writeRounds(w io.Writer) error {
	median := medianRound(r.Rounds)
	fmt.Fprintf(w, "\n%d rounds (the figures above are the median round's, marked *; p50 and CPU of all processes per transaction in ms):\n", len(r.Rounds))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "round\ttpcd/s\tp50 tpcd\tCPU tpcd\t")
	for _, b := range r.Baselines {
		fmt.Fprintf(tw, "%[1]s/s\ttpcd/%[1]s\tp50 %[1]s\tp99 ratio\tCPU %[1]s\t", b.Mode)
	}
	fmt.Fprintln(tw)
	for i, rd := range r.Rounds {
		mark := ""
		if rd.TPCD == median.TPCD {
			mark = "*"
		}
		t := rd.TPCD
		fmt.Fprintf(tw, "%d%s\t%.1f\t%.2f\t%.2f\t", i+1, mark, t.CommittedPerSec, t.Latency.P50, machineCPUPerTx(t))
		for _, b := range r.Baselines {
			res, q := rd.baseline(b.Mode)
			if res == nil {
				fmt.Fprint(tw, "-\t-\t-\t-\t-\t")
				continue
			}
			fmt.Fprintf(tw, "%.1f\t%.2fx\t%.2f\t%.2fx\t%.2f\t", res.CommittedPerSec, q.Throughput, res.Latency.P50, q.P99, machineCPUPerTx(res))
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

// baseline is the round's result of the baseline mode and tpcd's ratio
// against it; nil if the round did not measure it.
func (r Round) baseline(mode string) (*Result, *Ratio) {
	for _, res := range r.Baselines {
		if res.Mode == mode {
			return res, r.Ratios[mode]
		}
	}
	return nil, nil
}

func machineCPUPerTx(r *Result) float64 {
	if r.Costs == nil {
		return 0
	}
	return r.Costs.MachineCPUMsPerTx
}
