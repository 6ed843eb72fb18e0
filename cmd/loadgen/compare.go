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
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: loadgen compare [-out DIR] [-title T] RESULT_DIR...\n\nPrints a side-by-side table of the runs and, with -out, draws the latency-percentile charts\n(e2e-latency.svg/.png, publish-latency.svg/.png) and writes the table to compare.txt.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return fmt.Errorf("compare needs at least one result directory")
	}
	var runs []*loadgen.Result
	for _, dir := range fs.Args() {
		r, err := loadgen.ReadResult(dir)
		if err != nil {
			return err
		}
		runs = append(runs, r)
	}
	var w io.Writer = os.Stdout
	var f *os.File
	if *out != "" {
		if err := os.MkdirAll(*out, 0o755); err != nil {
			return err
		}
		var err error
		if f, err = os.Create(filepath.Join(*out, "compare.txt")); err != nil {
			return err
		}
		defer f.Close()
		w = io.MultiWriter(os.Stdout, f)
	}
	loadgen.CompareTable(w, runs)
	if *out == "" {
		return nil
	}
	files, err := loadgen.WriteCharts(*out, *title, runs)
	for _, p := range files {
		fmt.Println("chart:", p)
	}
	if err != nil {
		return err
	}
	return f.Close()
}
