package loadgen

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"gonum.org/v1/plot/plotter"
)

// RunData is one result directory as charts and reports read it: the result and its per-second
// intervals.
type RunData struct {
	Dir     string
	Result  *Result
	Publish []Interval // from publish.hlog; nil without it
	E2E     []Interval // from e2e.hlog
}

// LoadRun reads a result directory.
func LoadRun(dir string) (*RunData, error) {
	r, err := ReadResult(dir)
	if err != nil {
		return nil, err
	}
	d := &RunData{Dir: dir, Result: r}
	if st, err := os.Stat(dir); err == nil && !st.IsDir() {
		dir = filepath.Dir(dir)
	}
	for _, f := range []struct {
		name string
		dst  *[]Interval
	}{{PublishHlog, &d.Publish}, {E2EHlog, &d.E2E}} {
		if _, err := os.Stat(filepath.Join(dir, f.name)); err != nil {
			continue
		}
		if *f.dst, err = ReadIntervalsFile(filepath.Join(dir, f.name)); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// RunDataOf wraps a result still in memory (its logs not yet written).
func RunDataOf(r *Result) *RunData {
	d := &RunData{Result: r}
	if len(r.PublishLog) > 0 {
		d.Publish, _ = ReadIntervals(strings.NewReader(string(r.PublishLog)))
	}
	if len(r.E2ELog) > 0 {
		d.E2E, _ = ReadIntervals(strings.NewReader(string(r.E2ELog)))
	}
	return d
}

// SweepData is a sweep directory: sweep.json and the steps' results.
type SweepData struct {
	Dir   string
	Sweep SweepResult
	Steps []*RunData
}

// LoadSweep reads a sweep directory (sweep.json and step-* result directories).
func LoadSweep(dir string) (*SweepData, error) {
	b, err := os.ReadFile(filepath.Join(dir, "sweep.json"))
	if err != nil {
		return nil, err
	}
	s := &SweepData{Dir: dir}
	if err := json.Unmarshal(b, &s.Sweep); err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	steps, _ := filepath.Glob(filepath.Join(dir, "step-*", ResultFile))
	slices.Sort(steps)
	for _, f := range steps {
		d, err := LoadRun(filepath.Dir(f))
		if err != nil {
			return nil, err
		}
		s.Steps = append(s.Steps, d)
	}
	return s, nil
}

// percentilePoints turns a latency's curve into (percentile, ms) points.
func percentilePoints(l *Latency) plotter.XYs {
	pts := make(plotter.XYs, 0, len(l.Curve))
	for _, p := range l.Curve {
		pts = append(pts, plotter.XY{X: p.Percentile, Y: p.Us / 1e3})
	}
	return pts
}

// rates turns cumulative counts over time into per-second rates.
func rates(tl []Sample, pick func(Sample) int64) plotter.XYs {
	var pts plotter.XYs
	var prev Sample
	for i, s := range tl {
		dt := s.At - prev.At
		if i > 0 && dt < 0.5 {
			continue // a short tail (the run's last moments): folded into the next window, if any
		}
		if i > 0 {
			pts = append(pts, plotter.XY{X: s.At, Y: float64(pick(s)-pick(prev)) / dt})
		}
		prev = s
	}
	return pts
}

// intervalPoints picks one statistic of each interval (ms), at the interval's end.
func intervalPoints(ivs []Interval, pick func(Interval) float64) plotter.XYs {
	var pts plotter.XYs
	for _, iv := range ivs {
		if iv.Count == 0 {
			continue
		}
		pts = append(pts, plotter.XY{X: (iv.At + iv.Len).Seconds(), Y: pick(iv)})
	}
	return pts
}

// BuildCharts draws every chart the runs have data for: latency by percentile, throughput,
// latency percentiles, consumer lag and errors over time (one line per run; a single run's latency
// over time shows p50, p99, p99.9 and max together), and each sweep's latency against throughput.
func BuildCharts(title string, runs []*RunData, sweeps []*SweepData) ([]Chart, error) {
	prefix := ""
	if title != "" {
		prefix = title + ": "
	}
	var charts []Chart
	add := func(c Chart, err error) error {
		if err == nil {
			charts = append(charts, c)
		}
		return err
	}
	for _, kind := range []struct {
		name, title string
		pick        func(*Result) *Latency
	}{
		{E2EChart, "end-to-end latency by percentile", func(r *Result) *Latency { return &r.EndToEnd }},
		{PublishChart, "publish latency by percentile", func(r *Result) *Latency { return &r.Publish }},
	} {
		var ss []Series
		for _, r := range runs {
			if l := kind.pick(r.Result); l.Count > 0 {
				ss = append(ss, Series{Label: r.Result.Label, Points: percentilePoints(l)})
			}
		}
		if len(ss) > 0 {
			if err := add(PercentileChart(kind.name, prefix+kind.title, ss)); err != nil {
				return nil, err
			}
		}
	}

	// Throughput over time: the timeline's counts, or (older results) the logs' interval counts.
	for _, kind := range []struct {
		name, title string
		tl          func(Sample) int64
		ivs         func(*RunData) []Interval
	}{
		{"produce-rate", "produce throughput over time", func(s Sample) int64 { return s.Produced }, func(r *RunData) []Interval { return r.Publish }},
		{"consume-rate", "consume throughput over time", func(s Sample) int64 { return s.Consumed }, func(r *RunData) []Interval { return r.E2E }},
	} {
		var ss []Series
		for _, r := range runs {
			var pts plotter.XYs
			if len(r.Result.Timeline) > 1 {
				pts = rates(r.Result.Timeline, kind.tl)
			} else {
				var full []Interval // a short last interval's rate is noise
				for _, iv := range kind.ivs(r) {
					if iv.Len >= 500*time.Millisecond {
						full = append(full, iv)
					}
				}
				pts = intervalPoints(full, func(iv Interval) float64 { return float64(iv.Count) / iv.Len.Seconds() })
			}
			if len(pts) > 0 {
				ss = append(ss, Series{Label: r.Result.Label, Points: pts})
			}
		}
		if len(ss) > 0 {
			if err := add(TimeChart(kind.name, prefix+kind.title, "records/s", ss, false)); err != nil {
				return nil, err
			}
		}
	}

	// Latency percentiles over time.
	stats := []struct {
		name string
		pick func(Interval) float64
	}{{"p50", func(iv Interval) float64 { return iv.P50 }}, {"p99", func(iv Interval) float64 { return iv.P99 }},
		{"p99.9", func(iv Interval) float64 { return iv.P999 }}, {"max", func(iv Interval) float64 { return iv.Max }}}
	for _, kind := range []struct {
		name, title string
		ivs         func(*RunData) []Interval
	}{
		{"publish", "publish latency", func(r *RunData) []Interval { return r.Publish }},
		{"e2e", "end-to-end latency", func(r *RunData) []Interval { return r.E2E }},
	} {
		if len(runs) == 1 {
			var ss []Series
			for _, st := range stats {
				if pts := intervalPoints(kind.ivs(runs[0]), st.pick); len(pts) > 0 {
					ss = append(ss, Series{Label: st.name, Points: pts})
				}
			}
			if len(ss) > 0 {
				if err := add(TimeChart(kind.name+"-over-time", prefix+kind.title+" per second", "latency (ms, log scale)", ss, true)); err != nil {
					return nil, err
				}
			}
			continue
		}
		for _, st := range stats {
			var ss []Series
			for _, r := range runs {
				if pts := intervalPoints(kind.ivs(r), st.pick); len(pts) > 0 {
					ss = append(ss, Series{Label: r.Result.Label, Points: pts})
				}
			}
			if len(ss) > 0 {
				if err := add(TimeChart(kind.name+"-"+st.name+"-over-time", prefix+kind.title+" "+st.name+" per second", "latency (ms, log scale)", ss, true)); err != nil {
					return nil, err
				}
			}
		}
	}

	// Consumer lag and errors over time (results with a timeline).
	for _, kind := range []struct {
		name, title, ylabel string
		points              func(tl []Sample) plotter.XYs
	}{
		{"consumer-lag", "consumer lag over time", "records behind", func(tl []Sample) plotter.XYs {
			pts := make(plotter.XYs, 0, len(tl))
			for _, s := range tl {
				pts = append(pts, plotter.XY{X: s.At, Y: float64(max(s.Lag, 0))})
			}
			return pts
		}},
		{"errors", "failed records over time", "records/s", func(tl []Sample) plotter.XYs { return rates(tl, func(s Sample) int64 { return s.Failed }) }},
	} {
		var ss []Series
		for _, r := range runs {
			if len(r.Result.Timeline) > 1 && (kind.name != "consumer-lag" || r.Result.Workload.Consumers > 0) {
				ss = append(ss, Series{Label: r.Result.Label, Points: kind.points(r.Result.Timeline)})
			}
		}
		if len(ss) > 0 {
			if err := add(TimeChart(kind.name, prefix+kind.title, kind.ylabel, ss, false)); err != nil {
				return nil, err
			}
		}
	}

	for i, s := range sweeps {
		c, err := SweepChart(fmt.Sprintf("sweep-%d", i+1), prefix+"latency at each offered load: "+s.Sweep.Workload.Name, s)
		if err != nil {
			return nil, err
		}
		if c.Plot != nil {
			charts = append(charts, c)
		}
	}
	return charts, nil
}

// SweepChart is the classic latency-against-throughput curve of a sweep: x the achieved rate,
// y the end-to-end (else publish) p50, p99 and p99.9 of each step, with the bound dashed.
func SweepChart(name, title string, s *SweepData) (Chart, error) {
	type step struct {
		x          float64
		p50, p99   float64
		p999       float64
		fromResult bool
	}
	var steps []step
	if len(s.Steps) > 0 {
		for _, d := range s.Steps {
			l := d.Result.EndToEnd
			if l.Count == 0 {
				l = d.Result.Publish
			}
			steps = append(steps, step{x: d.Result.Produce.RecordsPerSec, p50: l.P50 / 1e3, p99: l.P99 / 1e3, p999: l.P999 / 1e3, fromResult: true})
		}
	} else {
		for _, st := range s.Sweep.Steps {
			steps = append(steps, step{x: st.Achieved, p99: st.P99Ms})
		}
	}
	if len(steps) == 0 {
		return Chart{}, nil
	}
	slices.SortFunc(steps, func(a, b step) int {
		switch {
		case a.x < b.x:
			return -1
		case a.x > b.x:
			return 1
		}
		return 0
	})
	var p50, p99, p999, bound plotter.XYs
	for _, st := range steps {
		p99 = append(p99, plotter.XY{X: st.x, Y: st.p99})
		if st.fromResult {
			p50 = append(p50, plotter.XY{X: st.x, Y: st.p50})
			p999 = append(p999, plotter.XY{X: st.x, Y: st.p999})
		}
	}
	if s.Sweep.P99MaxMs > 0 {
		bound = plotter.XYs{{X: steps[0].x, Y: s.Sweep.P99MaxMs}, {X: steps[len(steps)-1].x, Y: s.Sweep.P99MaxMs}}
	}
	ss := []Series{{Label: "p50", Points: p50}, {Label: "p99", Points: p99}, {Label: "p99.9", Points: p999}, {Label: "p99 bound", Points: bound, Dashed: true}}
	p := newPlot(title, "achieved throughput (records/s)", "latency (ms, log scale)")
	logY(p, ss)
	p.X.Tick.Marker = siTicks{}
	if err := addLines(p, ss); err != nil {
		return Chart{}, err
	}
	for i, s := range ss {
		if len(s.Points) < 2 {
			continue
		}
		sc, err := plotter.NewScatter(s.Points)
		if err != nil {
			return Chart{}, err
		}
		sc.Color = palette[i%len(palette)]
		p.Add(sc)
	}
	return Chart{Name: name, Title: title, Plot: p}, nil
}
