package loadgen

import (
	"sync"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Latency histograms hold nanoseconds, tracked from 1 µs to 60 s with 3 significant digits,
// HdrHistogram's convention (its log format scales interval maxima from ns to ms).
const (
	histLowest  = int64(time.Microsecond)
	histHighest = int64(60 * time.Second)
	histSigFigs = 3
)

// NewHistogram returns an empty latency histogram (ns, 1 µs..60 s, 3 significant digits).
func NewHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(histLowest, histHighest, histSigFigs)
}

// Recorder is one goroutine's latency histogram. Its owner records; a reporter swaps the
// histogram out once per interval. The mutex is uncontended except during that swap.
type Recorder struct {
	mu  sync.Mutex
	cur *hdrhistogram.Histogram
	// over counts values above the histogram's range, clamped to its top.
	over int64
}

// NewRecorder returns a Recorder with an empty histogram.
func NewRecorder() *Recorder { return &Recorder{cur: NewHistogram()} }

// Record adds one latency in nanoseconds (clamped to 1 µs..60 s).
func (r *Recorder) Record(ns int64) {
	r.mu.Lock()
	r.recordLocked(ns)
	r.mu.Unlock()
}

// Lock and Unlock let an owner record many values under one lock (a fetched batch).
func (r *Recorder) Lock()   { r.mu.Lock() }
func (r *Recorder) Unlock() { r.mu.Unlock() }

// RecordLocked adds one value; the caller holds the lock.
func (r *Recorder) RecordLocked(ns int64) { r.recordLocked(ns) }

func (r *Recorder) recordLocked(ns int64) {
	if ns < histLowest {
		ns = histLowest
	} else if ns > histHighest {
		ns = histHighest
		r.over++
	}
	_ = r.cur.RecordValue(ns) // cannot fail: ns is within range
}

// swap replaces the recorder's histogram with spare (which must be empty) and returns the old one.
func (r *Recorder) swap(spare *hdrhistogram.Histogram) (*hdrhistogram.Histogram, int64) {
	r.mu.Lock()
	old, over := r.cur, r.over
	r.cur, r.over = spare, 0
	r.mu.Unlock()
	return old, over
}

// LatencySet merges the Recorders of one measurement (say, end-to-end latency of all
// consumers) into an interval histogram and a running total.
type LatencySet struct {
	recorders []*Recorder
	spare     *hdrhistogram.Histogram
	Interval  *hdrhistogram.Histogram // the last interval, merged
	Total     *hdrhistogram.Histogram // every interval so far
	Over      int64                   // values above 60 s, counted at 60 s
}

// NewLatencySet returns an empty set.
func NewLatencySet() *LatencySet {
	return &LatencySet{spare: NewHistogram(), Interval: NewHistogram(), Total: NewHistogram()}
}

// Add registers a recorder; call before measuring starts.
func (s *LatencySet) Add(r *Recorder) { s.recorders = append(s.recorders, r) }

// Tick moves every recorder's values into Interval (replacing its previous content) and Total.
// start and end stamp the interval (for the HdrHistogram log).
func (s *LatencySet) Tick(start, end time.Time) {
	s.Interval.Reset()
	for _, r := range s.recorders {
		old, over := r.swap(s.spare)
		s.Interval.Merge(old)
		old.Reset()
		s.spare = old
		s.Over += over
	}
	s.Interval.SetStartTimeMs(start.UnixMilli())
	s.Interval.SetEndTimeMs(end.UnixMilli())
	s.Total.Merge(s.Interval)
}
