// Command loadgen measures any Kafka-compatible broker: throughput, publish and
// end-to-end latency (open loop, free of coordinated omission), side-by-side comparisons.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/sluicebroker/sluice/loadgen"
)

const usage = `loadgen: benchmark any Kafka-compatible broker (Sluice, Kafka, Redpanda, kfake...)

usage:
  loadgen run     [flags] [-workload FILE]   run one workload, print a summary, write a result directory
  loadgen sweep   [flags] [-workload FILE]   raise the rate step by step; report the highest rate whose
                                             p99 end-to-end latency stays under -p99-max
  loadgen compare [-out DIR] [-html] DIR...  side-by-side table and charts (SVG, PNG; -html: report.html too)
  loadgen report  [-out FILE] DIR...         one self-contained HTML report: settings, summary, every chart, machines
  loadgen intervals [-mark MS] RESULT_DIR... per-second p50/p99/p99.9/max from the interval logs, stalls marked
  loadgen agent   [-listen ADDR]             serve a share of distributed runs (loadgen run -agents a:port,b:port)
  loadgen sink    [-listen ADDR]             a fake broker acknowledging produce without storing: loadgen's own ceiling
  loadgen version

-client kgo (the default) drives records through franz-go, what an application sees; -client native
uses loadgen's own lean producer and consumer (pre-encoded batches, pipelined requests) whose ceiling
is far above any broker's, so a max-rate figure is the broker's limit rather than the client's.

Fixed rate (-rate N) is open loop: each record has an intended send time and latency counts from
it, so a stalled broker cannot hide its stall. -rate 0 is closed loop at max rate, bounded by
-max-buffered-records in flight per producer. The intended send time is stamped into the first
20 bytes of every value (int64 Unix ns, producer index, sequence), so records are at least 20 bytes.

'loadgen run -h' lists every workload flag; a -workload YAML file uses the same names with
underscores (record_size, max_in_flight...) and flags override it.

examples:
  loadgen run -brokers 127.0.0.1:9092 -record-size 100 -partitions 8 -duration 60s
  loadgen run -workload bench/workloads/omb-classic.yaml -brokers 127.0.0.1:9092 -label sluice
  loadgen run -rate 20000 -compression zstd -payload text -keys random:1000 -linger 5ms
  loadgen sweep -workload bench/workloads/omb-classic.yaml -start 10000 -factor 1.5 -p99-max 20ms
  loadgen compare -out cmp results/local/*-run-*

A result directory holds result.json (every figure, the workload, broker API versions, machine),
summary.txt, the latency histograms in HdrHistogram's log format (publish.hlog, e2e.hlog) and
intervals.txt, their per-second table (p99 and max each second, so a stall is visible).
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "run":
		err = cmdRun(ctx, os.Args[2:])
	case "sweep":
		err = cmdSweep(ctx, os.Args[2:])
	case "compare":
		err = cmdCompare(os.Args[2:])
	case "intervals":
		err = cmdIntervals(os.Args[2:])
	case "report":
		err = cmdReport(os.Args[2:])
	case "sink":
		err = cmdSink(ctx, os.Args[2:])
	case "agent":
		err = cmdAgent(ctx, os.Args[2:])
	case "version":
		fmt.Println("loadgen", loadgen.Version)
	case "help", "-h", "-help", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "loadgen: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

// common holds the flags run and sweep share besides the workload.
type common struct {
	workload loadgen.Workload
	out      string
	label    string
	quiet    bool
	cpuprof  string
}

// parseWorkload reads -workload first (if given anywhere), then lets every other flag override it.
func parseWorkload(name string, args []string, extra func(fs *flag.FlagSet)) (*common, error) {
	c := &common{workload: loadgen.Defaults()}
	if path := findFlag(args, "workload"); path != "" {
		w, err := loadgen.LoadWorkload(path)
		if err != nil {
			return nil, err
		}
		c.workload = w
	}
	fs := flag.NewFlagSet("loadgen "+name, flag.ContinueOnError)
	fs.String("workload", "", "YAML workload file; flags override its values")
	fs.StringVar(&c.out, "out", "", "result directory (default results/local/<time>-<name>)")
	fs.StringVar(&c.label, "label", "", "name of this run in comparisons (default: workload name)")
	fs.BoolVar(&c.quiet, "quiet", false, "no live progress line")
	fs.StringVar(&c.cpuprof, "cpuprofile", "", "write loadgen's own CPU profile to this file")
	if extra != nil {
		extra(fs)
	}
	c.workload.BindFlags(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: loadgen %s [-workload FILE] [flags]\n\nFlags override the workload file's values (YAML keys use underscores: record_size).\n\n", name)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return c, c.workload.Validate()
}

// findFlag returns the value of -name/--name in args, before flag parsing.
func findFlag(args []string, name string) string {
	for i, a := range args {
		a = strings.TrimLeft(a, "-")
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

func defaultOut(kind, name string) string {
	return filepath.Join("results", "local", time.Now().UTC().Format("20060102-150405")+"-"+kind+"-"+name)
}

func cmdRun(ctx context.Context, args []string) error {
	var agents string
	c, err := parseWorkload("run", args, func(fs *flag.FlagSet) {
		fs.StringVar(&agents, "agents", "", "host:port of loadgen agents, comma separated: split the producers and consumers across them and merge their histograms")
	})
	if err != nil {
		return err
	}
	if c.out == "" {
		c.out = defaultOut("run", c.workload.Name)
	}
	var progress io.Writer = os.Stderr
	if c.quiet {
		progress = nil
	}
	if c.cpuprof != "" {
		f, err := os.Create(c.cpuprof)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	opt := loadgen.Options{Progress: progress, Label: c.label}
	var res *loadgen.Result
	if agents != "" {
		res, err = loadgen.RunAgents(ctx, c.workload, strings.Split(agents, ","), opt)
	} else {
		res, err = loadgen.Run(ctx, c.workload, opt)
	}
	if err != nil {
		return err
	}
	res.PrintSummary(os.Stdout)
	if err := res.Write(c.out); err != nil {
		return err
	}
	fmt.Println("result:", c.out)
	return nil
}
