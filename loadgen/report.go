package loadgen

import (
	"bytes"
	"fmt"
	"io"
	"sort"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// hlog writes one HdrHistogram log (the standard interval format) into memory.
type hlog struct {
	buf bytes.Buffer
	w   *hdrhistogram.HistogramLogWriter
}

func newHlog(start time.Time, tag string) *hlog {
	l := &hlog{}
	l.w = hdrhistogram.NewHistogramLogWriter(&l.buf)
	_ = l.w.OutputComment("[loadgen " + Version + " " + tag + " latency, values in nanoseconds]")
	_ = l.w.OutputLogFormatVersion()
	_ = l.w.OutputStartTime(start.UnixMilli())
	_ = l.w.OutputBaseTime(start.UnixMilli())
	l.w.SetBaseTime(start.UnixMilli())
	_ = l.w.OutputLegend()
	return l
}

func (l *hlog) add(h *hdrhistogram.Histogram) { _ = l.w.OutputIntervalHistogram(h) }

func (l *hlog) bytes() []byte { return l.buf.Bytes() }

// progressLine prints one live line: rates over the last interval, latency so far, lag.
func progressLine(out io.Writer, elapsed, interval time.Duration, c, prev [4]int64, pub, e2e *hdrhistogram.Histogram, lag int64) {
	s := interval.Seconds()
	if s <= 0 {
		s = 1
	}
	q := func(h *hdrhistogram.Histogram, p float64) string {
		if h.TotalCount() == 0 {
			return "-"
		}
		return ms(float64(h.ValueAtQuantile(p)) / 1e3)
	}
	fmt.Fprintf(out, "%5.0fs  produce %9.0f rec/s %8.2f MB/s  consume %9.0f rec/s %8.2f MB/s  publish p50 %s p99 %s ms  e2e p50 %s p99 %s ms  lag %d\n",
		elapsed.Seconds(), float64(c[0]-prev[0])/s, float64(c[1]-prev[1])/s/1e6, float64(c[2]-prev[2])/s, float64(c[3]-prev[3])/s/1e6,
		q(pub, 50), q(pub, 99), q(e2e, 50), q(e2e, 99), max(lag, 0))
}

// sortedKeys returns m's keys in order (stable output).
func sortedKeys(m map[string]int64) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
