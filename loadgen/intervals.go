package loadgen

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// IntervalsFile is the per-second table Write puts beside the HdrHistogram logs.
const IntervalsFile = "intervals.txt"

// Interval is one interval of an HdrHistogram log (loadgen ticks once a second), in ms.
type Interval struct {
	At    time.Duration // interval start, from the first interval's start (the run's start)
	Len   time.Duration
	Count int64
	P50   float64
	P99   float64
	P999  float64
	Max   float64
}

// ReadIntervals reads every interval of an HdrHistogram log. Leading and trailing empty intervals
// (warm-up, drain) are dropped; empty intervals between busy ones are kept, since a second
// without a single acknowledgement is the worst kind of stall.
func ReadIntervals(r io.Reader) ([]Interval, error) {
	lr := hdrhistogram.NewHistogramLogReader(r)
	var all []Interval
	var t0 int64
	for i := 0; ; i++ {
		h, err := lr.NextIntervalHistogram()
		if err != nil {
			return nil, err
		}
		if h == nil {
			break
		}
		if i == 0 {
			t0 = h.StartTimeMs()
		}
		iv := Interval{
			At:    time.Duration(h.StartTimeMs()-t0) * time.Millisecond,
			Len:   time.Duration(h.EndTimeMs()-h.StartTimeMs()) * time.Millisecond,
			Count: h.TotalCount(),
		}
		if iv.Count > 0 {
			q := func(p float64) float64 { return float64(h.ValueAtQuantile(p)) / 1e6 }
			iv.P50, iv.P99, iv.P999, iv.Max = q(50), q(99), q(99.9), float64(h.Max())/1e6
		}
		all = append(all, iv)
	}
	first, last := -1, -1
	for i, iv := range all {
		if iv.Count > 0 {
			if first < 0 {
				first = i
			}
			last = i
		}
	}
	if first < 0 {
		return nil, nil
	}
	return all[first : last+1], nil
}

// ReadIntervalsFile reads an HdrHistogram log file.
func ReadIntervalsFile(path string) ([]Interval, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	iv, err := ReadIntervals(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return iv, nil
}

// IntervalStats sums up a run's intervals: how many seconds there were, how many had a p99 above
// the mark, the worst second's p99 and the largest maximum.
type IntervalStats struct {
	Seconds, Over   int
	WorstP99, Worst float64
	MedianP99       float64
}

// Stats returns the summary of ivs against mark (ms; 0 = none counted over).
func Stats(ivs []Interval, mark float64) IntervalStats {
	var s IntervalStats
	p99s := make([]float64, 0, len(ivs))
	for _, iv := range ivs {
		s.Seconds++
		if mark > 0 && iv.P99 > mark {
			s.Over++
		}
		s.WorstP99 = max(s.WorstP99, iv.P99)
		s.Worst = max(s.Worst, iv.Max)
		p99s = append(p99s, iv.P99)
	}
	s.MedianP99 = median(p99s)
	return s
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	for i := 1; i < len(s); i++ { // insertion sort: a few dozen seconds
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// WriteIntervals prints one line per interval: time, count, p50, p99, p99.9, max (ms), and a
// "<" beside each second whose p99 is above mark ms (0 = no marks); then one summary line. With
// probe (loadgen's own wake-up delays, the same seconds), a column shows the most loadgen woke
// late in each second: a stall that shows there too was the client's or the machine's.
func WriteIntervals(out io.Writer, title string, ivs, probe []Interval, mark float64) {
	fmt.Fprintf(out, "%s: per-second latency (ms)\n", title)
	late := make(map[time.Duration]float64, len(probe))
	for _, iv := range probe {
		late[iv.At] = iv.Max
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	hdr := "t (s)\tcount\tp50\tp99\tp99.9\tmax\t"
	if probe != nil {
		hdr += "loadgen late\t"
	}
	fmt.Fprintln(tw, hdr+"\t")
	for _, iv := range ivs {
		flag := ""
		if mark > 0 && iv.P99 > mark {
			flag = "<"
		}
		line := fmt.Sprintf("%.1f\t%d\t%s\t%s\t%s\t%s\t", iv.At.Seconds(), iv.Count, msf(iv.P50), msf(iv.P99), msf(iv.P999), msf(iv.Max))
		if probe != nil {
			line += msf(late[iv.At]) + "\t"
		}
		fmt.Fprintln(tw, line+flag+"\t")
	}
	tw.Flush()
	s := Stats(ivs, mark)
	fmt.Fprintf(out, "%d seconds: median p99 %s, worst p99 %s, max %s", s.Seconds, msf(s.MedianP99), msf(s.WorstP99), msf(s.Worst))
	if mark > 0 {
		fmt.Fprintf(out, ", %d with p99 > %s ms", s.Over, msf(mark))
	}
	if probe != nil {
		ps := Stats(probe, 0)
		fmt.Fprintf(out, "; loadgen woke late by at most %s ms", msf(ps.Worst))
		if mark > 0 {
			onTime := 0
			for _, iv := range ivs {
				if iv.P99 > mark && late[iv.At] <= ProbeOnTime {
					onTime++
				}
			}
			fmt.Fprintf(out, "; %d marked seconds with loadgen on time (late <= %s ms)", onTime, msf(ProbeOnTime))
		}
	}
	fmt.Fprintln(out)
}

func msf(v float64) string {
	if v == 0 {
		return "-"
	}
	return ms(v * 1e3)
}

// ProbeOnTime is the most loadgen's probe may wake late (ms) in a second for that second's stall
// to be counted as the broker's rather than the client's or the machine's.
const ProbeOnTime = 5.0

// DefaultIntervalMark is the p99 above which Write's intervals.txt marks a second (issue 21's
// "no second with p99 above 10 ms").
const DefaultIntervalMark = 10.0

// writeIntervals writes intervals.txt for the logs the result holds.
func (r *Result) writeIntervals(dir string) error {
	var probe []Interval
	if len(r.ProbeLog) > 0 {
		var err error
		if probe, err = ReadIntervals(bytes.NewReader(r.ProbeLog)); err != nil {
			return err
		}
		if probe == nil {
			probe = []Interval{}
		}
	}
	var sb strings.Builder
	for _, l := range []struct {
		name string
		log  []byte
	}{{"publish", r.PublishLog}, {"end-to-end", r.E2ELog}} {
		if len(l.log) == 0 {
			continue
		}
		ivs, err := ReadIntervals(bytes.NewReader(l.log))
		if err != nil {
			return err
		}
		WriteIntervals(&sb, l.name, ivs, probe, DefaultIntervalMark)
		sb.WriteString("\n")
	}
	if sb.Len() == 0 {
		return nil
	}
	return os.WriteFile(filepath.Join(dir, IntervalsFile), []byte(sb.String()), 0o644)
}
