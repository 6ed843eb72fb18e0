package gcpace

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	for _, c := range []struct {
		live, headroom uint64
		want           int
	}{
		{10 << 20, 64 << 20, 640}, // a small heap may grow by the headroom
		{64 << 20, 64 << 20, 100}, // from the headroom on, Go's default
		{1 << 30, 64 << 20, 100},  // never below it
		{0, 64 << 20, 10_000},     // nothing live yet: capped
		{100 << 10, 64 << 20, 10_000},
	} {
		if got := Percent(c.live, c.headroom); got != c.want {
			t.Errorf("Percent(%d, %d) = %d, want %d", c.live, c.headroom, got, c.want)
		}
	}
}

// Run raises GOGC above 100 for this test binary's small heap, and puts back what it found.
func TestRunRaisesAndRestores(t *testing.T) {
	t.Setenv("GOGC", "") // Run stands back when GOGC is set
	before := debug.SetGCPercent(100)
	defer debug.SetGCPercent(before)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { Run(ctx, 1<<30, time.Millisecond); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if p := gogc(); p > 100 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GOGC still %d with a 1 GiB headroom", gogc())
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	if p := debug.SetGCPercent(100); p != 100 {
		t.Fatalf("GOGC %d after Run ended, want the 100 it found", p)
	}
}

// With GOGC set by the operator, Run changes nothing.
func TestRunLeavesAnOperatorsGOGC(t *testing.T) {
	t.Setenv("GOGC", "150")
	before := debug.SetGCPercent(150)
	defer debug.SetGCPercent(before)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	Run(ctx, 1<<30, time.Millisecond) // returns at once
	if p := debug.SetGCPercent(150); p != 150 {
		t.Fatalf("GOGC %d, want the operator's 150", p)
	}
}

// gogc reads the current GOGC without setting it.
func gogc() uint64 {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}
