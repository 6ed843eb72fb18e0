package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/sluicebroker/sluice/loadgen"
)

func cmdCompare(args []string) error {
	fs := flag.NewFlagSet("loadgen compare", flag.ContinueOnError)
	out := fs.String("out", "", "directory for the charts and compare.txt (default: none, table only)")
	title := fs.String("title", "", "chart title prefix")
	html := fs.Bool("html", false, "also write report.html into -out: one self-contained page with every chart (see loadgen report)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: loadgen compare [-out DIR] [-html] [-title T] RESULT_DIR...\n\nPrints a side-by-side table of the runs and, with -out, draws the charts as SVG and PNG\n(latency by percentile: e2e-latency, publish-latency; over time: produce-rate, consume-rate,\nlatency percentiles per second, consumer-lag, errors) and writes the table to compare.txt.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return fmt.Errorf("compare needs at least one result directory")
	}
	runs, sweeps, err := loadgen.LoadReportInputs(fs.Args())
	if err != nil {
		return err
	}
	var results []*loadgen.Result
	for _, r := range runs {
		results = append(results, r.Result)
	}
	var w io.Writer = os.Stdout
	var f *os.File
	if *out != "" {
		if err := os.MkdirAll(*out, 0o755); err != nil {
			return err
		}
		if f, err = os.Create(filepath.Join(*out, "compare.txt")); err != nil {
			return err
		}
		defer f.Close()
		w = io.MultiWriter(os.Stdout, f)
	}
	loadgen.CompareTable(w, results)
	if *out == "" {
		if *html {
			return fmt.Errorf("-html needs -out")
		}
		return nil
	}
	files, err := loadgen.WriteCharts(*out, *title, runs, sweeps)
	for _, p := range files {
		fmt.Println("chart:", p)
	}
	if err != nil {
		return err
	}
	if *html {
		path := filepath.Join(*out, "report.html")
		if err := writeReport(path, *title, runs, sweeps); err != nil {
			return err
		}
		fmt.Println("report:", path)
	}
	return f.Close()
}

// cmdReport writes the HTML report of result, sweep and comparison directories.
func cmdReport(args []string) error {
	fs := flag.NewFlagSet("loadgen report", flag.ContinueOnError)
	out := fs.String("out", "report.html", "the HTML file to write")
	title := fs.String("title", "", "the report's title")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: loadgen report [-out FILE] [-title T] RESULT_DIR...\n\nOne self-contained HTML page (charts inline as SVG, nothing fetched): the summary table, each run's\nsettings side by side, latency by percentile, throughput, latency percentiles, consumer lag and errors\nover time, each sweep's latency-against-throughput curve, and the machines. A directory may be a\nresult, a sweep (sweep.json and its steps) or a directory of results.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return fmt.Errorf("report needs at least one result directory")
	}
	runs, sweeps, err := loadgen.LoadReportInputs(fs.Args())
	if err != nil {
		return err
	}
	if err := writeReport(*out, *title, runs, sweeps); err != nil {
		return err
	}
	fmt.Println("report:", *out)
	return nil
}

func writeReport(path, title string, runs []*loadgen.RunData, sweeps []*loadgen.SweepData) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := loadgen.WriteReport(f, title, runs, sweeps); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
