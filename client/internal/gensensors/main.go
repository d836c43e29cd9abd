// Command gensensors writes testdata/sensors.csv, the demo data set of
// `tpcd client load`: sensor observations (id, sensor_id, temperature,
// observed_at). The output depends only on the flags, so the committed
// file can be checked against a fresh run (go generate ./client).
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"time"
)

func main() {
	out := flag.String("o", "", "output file (default: standard output)")
	rows := flag.Int("rows", DefaultRows, "number of observations")
	seed := flag.Uint64("seed", DefaultSeed, "random seed")
	flag.Parse()
	w := io.Writer(os.Stdout)
	var f *os.File
	if *out != "" {
		var err error
		if f, err = os.Create(*out); err != nil {
			fmt.Fprintln(os.Stderr, "gensensors:", err)
			os.Exit(1)
		}
		w = f
	}
	if err := Generate(w, *rows, *seed); err != nil {
		fmt.Fprintln(os.Stderr, "gensensors:", err)
		os.Exit(1)
	}
	if f != nil {
		if err := f.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "gensensors:", err)
			os.Exit(1)
		}
	}
}

// Defaults of the committed data set.
const (
	DefaultRows    = 3000
	DefaultSeed    = 2024
	sensors        = 40
	firstObserved  = "2024-03-01T00:00:00Z"
	observationGap = 30 * time.Second
)

// Generate writes rows observations. Only the PCG generator's raw output
// is used (its algorithm is fixed), never math/rand's derived helpers,
// whose values may change between Go releases.
func Generate(w io.Writer, rows int, seed uint64) error {
	src := rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)
	uniform := func() float64 { return float64(src.Uint64()>>11) / (1 << 53) }
	start, err := time.Parse(time.RFC3339, firstObserved)
	if err != nil {
		return err
	}
	// Each sensor sits somewhere between 12 and 30 degrees.
	base := make([]float64, sensors)
	for i := range base {
		base[i] = 12 + 18*uniform()
	}
	bw := bufio.NewWriter(w)
	fmt.Fprintln(bw, "id,sensor_id,temperature,observed_at")
	for i := range rows {
		s := int(src.Uint64() % sensors)
		// The sum of three uniforms is a cheap bell curve around the base.
		noise := (uniform() + uniform() + uniform() - 1.5) * 2
		at := start.Add(time.Duration(i) * observationGap)
		fmt.Fprintf(bw, "%d,%d,%.2f,%s\n", i+1, s+1, base[s]+noise, at.Format(time.RFC3339))
	}
	return bw.Flush()
}
