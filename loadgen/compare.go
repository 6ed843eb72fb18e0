package loadgen

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
)

// Comparison chart files written by WriteCharts.
const (
	E2EChart     = "e2e-latency"
	PublishChart = "publish-latency"
)

// CompareTable prints one row per run: throughput, latency percentiles, errors and warnings.
func CompareTable(out io.Writer, runs []*Result) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "run\trecord\trate\tprod rec/s\tprod MB/s\tcons rec/s\tpub p50\tpub p99\tpub p99.9\tpub max\te2e p50\te2e p99\te2e p99.9\te2e p99.99\te2e max\terrors\tlag\tok\t")
	for _, r := range runs {
		rate := "max"
		if r.Workload.Rate > 0 {
			rate = fmt.Sprintf("%.0f", r.Workload.Rate)
		}
		var errs int64
		for _, v := range r.ProduceErrors {
			errs += v
		}
		for _, v := range r.ConsumeErrors {
			errs += v
		}
		ok := "yes"
		if len(r.Warnings) > 0 {
			ok = fmt.Sprintf("%d warning(s)", len(r.Warnings))
		} else if errs > 0 || r.ConsumerLag > 0 {
			ok = "no"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.0f\t%.1f\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t\n",
			r.Label, r.Workload.RecordSize, rate,
			r.Produce.RecordsPerSec, r.Produce.MBPerSec, r.Consume.RecordsPerSec,
			ms(r.Publish.P50), ms(r.Publish.P99), ms(r.Publish.P999), ms(r.Publish.Max),
			ms(r.EndToEnd.P50), ms(r.EndToEnd.P99), ms(r.EndToEnd.P999), ms(r.EndToEnd.P9999), ms(r.EndToEnd.Max),
			errs, r.ConsumerLag, ok)
	}
	tw.Flush()
	fmt.Fprintln(out, "latencies in ms, counted from each record's intended send time")
	for _, r := range runs {
		for _, w := range r.Warnings {
			fmt.Fprintf(out, "%s: WARNING: %s\n", r.Label, w)
		}
	}
}

// WriteCharts draws every chart of runs (see BuildCharts) into dir as SVG and PNG, and returns
// the files written.
func WriteCharts(dir, title string, runs []*RunData, sweeps []*SweepData) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	charts, err := BuildCharts(title, runs, sweeps)
	if err != nil {
		return nil, err
	}
	var files []string
	for _, c := range charts {
		for _, ext := range []string{"svg", "png"} {
			b, err := c.render(ext)
			if err != nil {
				return files, fmt.Errorf("%s: %w", c.Name, err)
			}
			path := filepath.Join(dir, c.Name+"."+ext)
			if err := os.WriteFile(path, b, 0o644); err != nil {
				return files, err
			}
			files = append(files, path)
		}
	}
	return files, nil
}
