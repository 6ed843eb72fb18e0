package loadgen

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Version is loadgen's version, written into every result.
const Version = "0.1.0"

// Result file names inside a result directory.
const (
	ResultFile  = "result.json"
	PublishHlog = "publish.hlog"
	E2EHlog     = "e2e.hlog"
	ProbeHlog   = "probe.hlog"
	SummaryFile = "summary.txt"
)

// Result is everything one run measured. It is written as result.json.
type Result struct {
	Loadgen  string   `json:"loadgen_version"`
	Label    string   `json:"label"` // what compare calls this run (default: the workload name)
	Workload Workload `json:"workload"`
	Broker   Broker   `json:"broker"`
	Machine  Machine  `json:"machine"`

	Start           time.Time `json:"start"`
	MeasuredSeconds float64   `json:"measured_seconds"` // the window rates are computed over (after warm-up)

	Produce  Throughput `json:"produce"`
	Consume  Throughput `json:"consume"`
	Schedule Schedule   `json:"schedule"`

	Publish  Latency `json:"publish_latency"`    // acknowledgement - intended send time
	EndToEnd Latency `json:"end_to_end_latency"` // consumer delivery - intended send time

	ProduceErrors map[string]int64 `json:"produce_errors"`
	ConsumeErrors map[string]int64 `json:"consume_errors"`
	ConsumerLag   int64            `json:"consumer_lag"` // acknowledged records no group had consumed at the end, summed over groups
	Check         Check            `json:"check"`
	Warnings      []string         `json:"warnings,omitempty"`
	// Timeline holds the counters once a second (throughput, lag and errors over time).
	Timeline []Sample `json:"timeline,omitempty"`
	// Agents are the machines of a distributed run (loadgen run -agents), each with its share.
	Agents []AgentInfo `json:"agents,omitempty"`

	// Histograms of the measured window; written as HdrHistogram logs, not in the JSON.
	PublishHist *hdrhistogram.Histogram `json:"-"`
	E2EHist     *hdrhistogram.Histogram `json:"-"`
	PublishLog  []byte                  `json:"-"`
	E2ELog      []byte                  `json:"-"`
	ProbeLog    []byte                  `json:"-"` // loadgen's own wake-up delays (probe.go)
}

// Broker is what loadgen learned about the broker it measured.
type Broker struct {
	Bootstrap   []string `json:"bootstrap"`
	VersionHint string   `json:"version_guess"` // franz-go's guess from the API versions
	APIVersions []string `json:"api_versions"`  // "Produce 0-11", as the first broker answered ApiVersions
}

// Throughput counts records over the whole run and rates over the measured window.
type Throughput struct {
	Records       int64   `json:"records"` // whole run, warm-up included
	Bytes         int64   `json:"bytes"`
	RecordsPerSec float64 `json:"records_per_sec"` // measured window
	MBPerSec      float64 `json:"mb_per_sec"`      // 10^6 bytes of record values per second
}

// Schedule tells how well the producers kept to their schedule.
type Schedule struct {
	TargetRate      float64 `json:"target_rate"` // records/s; 0 = max rate (closed loop)
	MaxLagMs        float64 `json:"max_lag_ms"`  // the most a send came after its intended time
	LagP99Ms        float64 `json:"lag_p99_ms"`
	BlockedSeconds  float64 `json:"blocked_seconds"`     // summed over producers: waits for the in-flight bound
	Unsent          int64   `json:"unsent"`              // scheduled records never sent (held back until the end)
	InFlightBound   int     `json:"in_flight_bound"`     // records per producer
	LoadgenLimited  bool    `json:"loadgen_limited"`     // the send loop fell behind without waiting on the in-flight bound
	TargetAchieved  bool    `json:"target_achieved"`     // produce rate >= 95% of target
	ProducerThreads int     `json:"producer_clients"`    // producers
	ConsumerThreads int     `json:"consumer_clients"`    // consumers over all groups
	GOMAXPROCS      int     `json:"gomaxprocs"`          // loadgen's
	CPUSeconds      float64 `json:"loadgen_cpu_seconds"` // loadgen's own user+system CPU over the run
}

// Latency is one histogram's summary, in microseconds.
type Latency struct {
	Count  int64   `json:"count"`
	Min    float64 `json:"min_us"`
	Mean   float64 `json:"mean_us"`
	P50    float64 `json:"p50_us"`
	P75    float64 `json:"p75_us"`
	P90    float64 `json:"p90_us"`
	P95    float64 `json:"p95_us"`
	P99    float64 `json:"p99_us"`
	P999   float64 `json:"p99_9_us"`
	P9999  float64 `json:"p99_99_us"`
	Max    float64 `json:"max_us"`
	Over   int64   `json:"over_60s"` // values beyond the histogram, counted as 60 s
	Curve  []Point `json:"percentile_curve"`
	Source string  `json:"hlog,omitempty"` // the HdrHistogram log holding the intervals
}

// Point is one point of a percentile curve: the latency at or below which Percentile % fall.
type Point struct {
	Percentile float64 `json:"p"`
	Us         float64 `json:"us"`
}

// Check is the consumers' verdict on what they read, summed over groups.
type Check struct {
	OutOfOrder int64 `json:"out_of_order"` // a producer's sequence did not increase within a partition (duplicates too)
	OffsetGaps int64 `json:"offset_gaps"`
	Stale      int64 `json:"stale"`    // records of earlier runs, skipped
	Foreign    int64 `json:"foreign"`  // records without a loadgen stamp, skipped
	Complete   bool  `json:"complete"` // every group consumed every acknowledged record
}

// summarize turns a histogram into a Latency.
func summarize(h *hdrhistogram.Histogram, over int64) Latency {
	us := func(ns int64) float64 { return float64(ns) / 1e3 }
	l := Latency{Count: h.TotalCount(), Over: over}
	if l.Count == 0 {
		return l
	}
	l.Min, l.Mean, l.Max = us(h.Min()), h.Mean()/1e3, us(h.Max())
	l.P50, l.P75, l.P90 = us(h.ValueAtQuantile(50)), us(h.ValueAtQuantile(75)), us(h.ValueAtQuantile(90))
	l.P95, l.P99 = us(h.ValueAtQuantile(95)), us(h.ValueAtQuantile(99))
	l.P999, l.P9999 = us(h.ValueAtQuantile(99.9)), us(h.ValueAtQuantile(99.99))
	l.Curve = percentileCurve(h)
	return l
}

// percentileCurve samples the histogram at percentiles evenly spaced on the log scale
// 1/(1-p) that HdrHistogram's plotter uses, from 0 up to the resolution the count allows.
func percentileCurve(h *hdrhistogram.Histogram) []Point {
	n := h.TotalCount()
	var pts []Point
	for i := 0; i <= 60; i++ { // ten points per decade, up to 99.9999%
		p := 100 * (1 - math.Pow(10, -float64(i)/10))
		if i > 0 && 1/(1-p/100) > float64(n) {
			break
		}
		pts = append(pts, Point{Percentile: p, Us: float64(h.ValueAtQuantile(p)) / 1e3})
	}
	return append(pts, Point{Percentile: 100, Us: float64(h.Max()) / 1e3})
}

// Write stores the result in dir: result.json, summary.txt and the two HdrHistogram logs.
func (r *Result) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if len(r.PublishLog) > 0 {
		r.Publish.Source = PublishHlog
		if err := os.WriteFile(filepath.Join(dir, PublishHlog), r.PublishLog, 0o644); err != nil {
			return err
		}
	}
	if len(r.E2ELog) > 0 {
		r.EndToEnd.Source = E2EHlog
		if err := os.WriteFile(filepath.Join(dir, E2EHlog), r.E2ELog, 0o644); err != nil {
			return err
		}
	}
	if len(r.ProbeLog) > 0 {
		if err := os.WriteFile(filepath.Join(dir, ProbeHlog), r.ProbeLog, 0o644); err != nil {
			return err
		}
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, ResultFile), append(b, '\n'), 0o644); err != nil {
		return err
	}
	if err := r.writeIntervals(dir); err != nil {
		return err
	}
	var sb strings.Builder
	r.PrintSummary(&sb)
	return os.WriteFile(filepath.Join(dir, SummaryFile), []byte(sb.String()), 0o644)
}

// ReadResult loads result.json from dir (or a path to the file itself).
func ReadResult(path string) (*Result, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, ResultFile)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Result
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if r.Label == "" {
		r.Label = r.Workload.Name
	}
	return &r, nil
}

// ReadHlog merges every interval of an HdrHistogram log file into one histogram.
func ReadHlog(path string) (*hdrhistogram.Histogram, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	lr := hdrhistogram.NewHistogramLogReader(f)
	total := NewHistogram()
	for {
		h, err := lr.NextIntervalHistogram()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if h == nil {
			return total, nil
		}
		total.Merge(h)
	}
}

// PrintSummary writes the human-readable summary table.
func (r *Result) PrintSummary(out io.Writer) {
	w := &r.Workload
	fmt.Fprintf(out, "loadgen %s  %s  brokers %s (%s)\n", r.Loadgen, r.Label, strings.Join(r.Broker.Bootstrap, ","), r.Broker.VersionHint)
	rate := "max (closed loop)"
	if w.Rate > 0 {
		rate = fmt.Sprintf("%.0f rec/s (open loop)", w.Rate)
	}
	fmt.Fprintf(out, "workload: %d topic(s) x %d partitions, record %s %s, keys %s, %d producer(s) at %s, acks=%s idempotent=%v linger=%s batch=%d compression=%s, %d group(s) x %d consumer(s), warm-up %s, measured %.1fs\n",
		w.Topics, w.Partitions, w.RecordSize, w.Payload, w.Keys, w.Producers, rate, w.Acks, w.Idempotent, w.Linger, w.BatchMaxBytes, w.Compression,
		w.ConsumerGroups, w.Consumers, w.Warmup, r.MeasuredSeconds)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\trecords\trec/s\tMB/s\t")
	fmt.Fprintf(tw, "produce\t%d\t%.0f\t%.2f\t\n", r.Produce.Records, r.Produce.RecordsPerSec, r.Produce.MBPerSec)
	fmt.Fprintf(tw, "consume\t%d\t%.0f\t%.2f\t\n", r.Consume.Records, r.Consume.RecordsPerSec, r.Consume.MBPerSec)
	tw.Flush()
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "latency ms\tcount\tp50\tp90\tp99\tp99.9\tp99.99\tmax\t")
	for _, l := range []struct {
		name string
		l    *Latency
	}{{"publish", &r.Publish}, {"end-to-end", &r.EndToEnd}} {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t\n", l.name, l.l.Count, ms(l.l.P50), ms(l.l.P90), ms(l.l.P99), ms(l.l.P999), ms(l.l.P9999), ms(l.l.Max))
	}
	tw.Flush()
	fmt.Fprintf(out, "schedule: max lag %.1f ms, p99 lag %.2f ms, blocked on in-flight bound %.1f s; consumer lag at end %d; loadgen CPU %.1f s\n",
		r.Schedule.MaxLagMs, r.Schedule.LagP99Ms, r.Schedule.BlockedSeconds, r.ConsumerLag, r.Schedule.CPUSeconds)
	fmt.Fprintf(out, "check: complete=%v out-of-order=%d offset-gaps=%d stale=%d foreign=%d\n",
		r.Check.Complete, r.Check.OutOfOrder, r.Check.OffsetGaps, r.Check.Stale, r.Check.Foreign)
	for _, k := range sortedKeys(r.ProduceErrors) {
		fmt.Fprintf(out, "produce error %s: %d\n", k, r.ProduceErrors[k])
	}
	for _, k := range sortedKeys(r.ConsumeErrors) {
		fmt.Fprintf(out, "consume error %s: %d\n", k, r.ConsumeErrors[k])
	}
	for _, s := range r.Warnings {
		fmt.Fprintf(out, "WARNING: %s\n", s)
	}
}

// ms formats microseconds as milliseconds with sensible precision.
func ms(us float64) string {
	v := us / 1e3
	switch {
	case v == 0:
		return "-"
	case v < 10:
		return fmt.Sprintf("%.3f", v)
	case v < 1000:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.0f", v)
}
