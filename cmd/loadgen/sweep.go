package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/sluicebroker/sluice/loadgen"
)

func cmdSweep(ctx context.Context, args []string) error {
	var opt loadgen.SweepOptions
	c, err := parseWorkload("sweep", args, func(fs *flag.FlagSet) {
		fs.Float64Var(&opt.Start, "start", 10000, "first rate, records/s")
		fs.Float64Var(&opt.Factor, "factor", 1.5, "multiply the rate by this each step")
		fs.Float64Var(&opt.MaxRate, "max-rate", 0, "highest rate to try (0 = until not sustainable)")
		fs.DurationVar(&opt.P99Max, "p99-max", 50*time.Millisecond, "p99 end-to-end latency bound")
		fs.IntVar(&opt.Refine, "refine", 2, "bisection steps between the last good and first bad rate")
	})
	if err != nil {
		return err
	}
	if c.out == "" {
		c.out = defaultOut("sweep", c.workload.Name)
	}
	if !c.quiet {
		opt.Progress = os.Stderr
	}
	var runs []*loadgen.RunData
	opt.Step = func(i int, r *loadgen.Result, s loadgen.SweepStep) {
		dir := filepath.Join(c.out, fmt.Sprintf("step-%02d-%.0f", i, s.Rate))
		if err := r.Write(dir); err != nil {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
		}
		verdict := "sustainable"
		if !s.OK {
			verdict = "not sustainable: " + s.Reason
		}
		fmt.Printf("step %d: %.0f rec/s -> achieved %.0f, p99 %.2f ms: %s\n", i, s.Rate, s.Achieved, s.P99Ms, verdict)
		runs = append(runs, loadgen.RunDataOf(r))
	}
	res, err := loadgen.Sweep(ctx, c.workload, opt)
	if res != nil {
		res.Print(os.Stdout)
		b, _ := json.MarshalIndent(res, "", "  ")
		if werr := os.WriteFile(filepath.Join(c.out, "sweep.json"), append(b, '\n'), 0o644); werr != nil && err == nil {
			err = werr
		}
		sd := &loadgen.SweepData{Dir: c.out, Sweep: *res, Steps: runs}
		if _, cerr := loadgen.WriteCharts(c.out, c.workload.Name+" sweep", runs, []*loadgen.SweepData{sd}); cerr != nil && err == nil {
			err = cerr
		}
		if rerr := writeReport(filepath.Join(c.out, "report.html"), c.workload.Name+" sweep", nil, []*loadgen.SweepData{sd}); rerr != nil && err == nil {
			err = rerr
		}
		fmt.Println("result:", c.out)
	}
	return err
}
