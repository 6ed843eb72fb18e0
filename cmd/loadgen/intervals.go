package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sluicebroker/sluice/loadgen"
)

// cmdIntervals prints the per-second latency of result directories (or HdrHistogram log files).
func cmdIntervals(args []string) error {
	fs := flag.NewFlagSet("loadgen intervals", flag.ContinueOnError)
	mark := fs.Float64("mark", loadgen.DefaultIntervalMark, "mark seconds whose p99 is above this many ms (0: none)")
	e2e := fs.Bool("e2e", false, "also the end-to-end latency of result directories")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: loadgen intervals [-mark MS] [-e2e] RESULT_DIR|FILE.hlog...\n\nPrints one line per second of the HdrHistogram interval log (count, p50, p99, p99.9, max in ms),\nmarking seconds whose p99 is above -mark: a stall shows as one or two marked seconds. Where the\nresult holds probe.hlog, a column shows how late loadgen's own 1 ms sleeps woke in each second\n(the client or the machine stalled, not only the broker).")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return fmt.Errorf("intervals needs a result directory or an .hlog file")
	}
	for _, arg := range fs.Args() {
		files := []string{arg}
		var probe []loadgen.Interval
		if st, err := os.Stat(arg); err == nil && st.IsDir() {
			if p, err := loadgen.ReadIntervalsFile(filepath.Join(arg, loadgen.ProbeHlog)); err == nil {
				probe = p
				if probe == nil {
					probe = []loadgen.Interval{}
				}
			}
			files = []string{filepath.Join(arg, loadgen.PublishHlog)}
			if *e2e {
				if _, err := os.Stat(filepath.Join(arg, loadgen.E2EHlog)); err == nil {
					files = append(files, filepath.Join(arg, loadgen.E2EHlog))
				}
			}
		}
		for _, f := range files {
			ivs, err := loadgen.ReadIntervalsFile(f)
			if err != nil {
				return err
			}
			loadgen.WriteIntervals(os.Stdout, f, ivs, probe, *mark)
			fmt.Println()
		}
	}
	return nil
}
