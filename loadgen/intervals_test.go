package loadgen

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// A log of seconds through a LatencySet reads back as one line per second with that second's own
// percentiles: the stall second stands out, warm-up seconds are dropped, an empty second between
// busy ones is kept, and the written table marks the stall.
func TestIntervalsShowEachSecond(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	set := NewLatencySet()
	rec := NewRecorder()
	set.Add(rec)
	l := newHlog(start, "publish")
	// Seconds: 0-1 warm-up (empty), 2 and 3 at 1..2 ms, 4 a stall (99% at 2 ms, 1% at 30 ms),
	// 5 empty, 6 at 1..2 ms, 7 drain (empty).
	second := func(i int, fill func()) {
		if fill != nil {
			fill()
		}
		set.Tick(start.Add(time.Duration(i)*time.Second), start.Add(time.Duration(i+1)*time.Second))
		l.add(set.Interval)
	}
	normal := func() {
		for v := range 1000 {
			rec.Record(int64(time.Millisecond) + int64(v)*int64(time.Microsecond))
		}
	}
	stall := func() {
		for range 980 {
			rec.Record(int64(2 * time.Millisecond))
		}
		for range 20 {
			rec.Record(int64(30 * time.Millisecond))
		}
	}
	for i, f := range []func(){nil, nil, normal, normal, stall, nil, normal, nil} {
		second(i, f)
	}
	ivs, err := ReadIntervals(bytes.NewReader(l.bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if len(ivs) != 5 {
		t.Fatalf("%d intervals, want 5 (seconds 2-6): %+v", len(ivs), ivs)
	}
	if ivs[0].At != 2*time.Second || ivs[4].At != 6*time.Second || ivs[0].Len != time.Second {
		t.Errorf("times: first at %v len %v, last at %v", ivs[0].At, ivs[0].Len, ivs[4].At)
	}
	within := func(got, want float64) bool { return got >= want*0.99 && got <= want*1.01 }
	if ivs[0].Count != 1000 || !within(ivs[0].P99, 1.99) || !within(ivs[0].Max, 1.999) {
		t.Errorf("normal second: %+v", ivs[0])
	}
	if ivs[2].Count != 1000 || !within(ivs[2].P50, 2) || !within(ivs[2].P99, 30) || !within(ivs[2].Max, 30) {
		t.Errorf("stall second: %+v", ivs[2])
	}
	if ivs[3].Count != 0 || ivs[3].P99 != 0 {
		t.Errorf("empty second: %+v", ivs[3])
	}
	s := Stats(ivs, 10)
	if s.Seconds != 5 || s.Over != 1 || !within(s.WorstP99, 30) || !within(s.MedianP99, 1.99) {
		t.Errorf("stats %+v", s)
	}

	var out bytes.Buffer
	WriteIntervals(&out, "publish", ivs, nil, 10)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	// title, header, 5 seconds, summary
	if len(lines) != 8 {
		t.Fatalf("table:\n%s", out.String())
	}
	marked := 0
	for _, ln := range lines[2:7] {
		if strings.HasSuffix(strings.TrimSpace(ln), "<") {
			marked++
			if !strings.HasPrefix(strings.TrimSpace(ln), "4.0 ") {
				t.Errorf("marked the wrong second: %q", ln)
			}
		}
	}
	if marked != 1 || !strings.Contains(lines[7], "1 with p99 > 10") {
		t.Errorf("table:\n%s", out.String())
	}

	// A written result carries the same table in intervals.txt.
	r := sampleResult()
	r.PublishLog = l.bytes()
	pl := newHlog(start, "probe")
	pset, prec := NewLatencySet(), NewRecorder()
	pset.Add(prec)
	for i := range 8 {
		if i >= 2 {
			prec.Record(int64(time.Duration(i) * time.Millisecond))
		}
		pset.Tick(start.Add(time.Duration(i)*time.Second), start.Add(time.Duration(i+1)*time.Second))
		pl.add(pset.Interval)
	}
	r.ProbeLog = pl.bytes()
	dir := t.TempDir()
	if err := r.Write(dir); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, IntervalsFile))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "loadgen late") || !strings.Contains(string(b), "woke late by at most 7.000 ms; 1 marked seconds with loadgen on time") || !strings.Contains(string(b), "end-to-end: per-second") {
		t.Errorf("intervals.txt:\n%s", b)
	}
	fromFile, err := ReadIntervalsFile(filepath.Join(dir, PublishHlog))
	if err != nil || len(fromFile) != 5 {
		t.Errorf("from file: %v, %d intervals", err, len(fromFile))
	}
}

// The probe records how late loadgen wakes up: a goroutine hogging the only P for 40 ms makes
// it late by about the scheduler's 10 ms preemption slice; before measureFrom nothing counts.
func TestProbeSeesLoadgenStarved(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	rec := NewRecorder()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); probe(ctx, rec, time.Now()) }()
	time.Sleep(20 * time.Millisecond)
	spin := time.Now()
	for time.Since(spin) < 40*time.Millisecond { // no blocking call: only preemption lets the probe run
	}
	time.Sleep(20 * time.Millisecond)
	cancel()
	<-done
	h, _ := rec.swap(NewHistogram())
	if h.TotalCount() < 10 || h.Max() < int64(5*time.Millisecond) {
		t.Errorf("probe: %d wake-ups, latest %v late; want >= 10 and >= 5ms", h.TotalCount(), time.Duration(h.Max()))
	}

	idle := NewRecorder()
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	probe(ctx, idle, time.Now().Add(time.Hour))
	if h, _ := idle.swap(NewHistogram()); h.TotalCount() != 0 {
		t.Errorf("probe recorded %d values before measureFrom", h.TotalCount())
	}
}
