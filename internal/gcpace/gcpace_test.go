package gcpace

import (
	"context"
	"runtime"
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
		{0, 64 << 20, 1600},       // nothing live yet: the heap minimum (4 MiB * 16) is the headroom
		{100 << 10, 64 << 20, 1600},
		{4 << 20, 64 << 20, 1600},
		{2 << 20, 1 << 20, 100}, // a headroom under the heap minimum: Go's default
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
	go func() { Run(ctx, 1<<30); close(done) }()
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
	Run(ctx, 1<<30) // returns at once
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

// A process that has not collected yet (live heap 0) must still collect once its heap has grown by
// about the headroom: at the former cap of 10,000 the first collection waited for 400 MiB.
func TestRunCollectsBeforeFarPastTheHeadroom(t *testing.T) {
	const headroom = 16 << 20
	startRun(t, headroom)
	for deadline := time.Now().Add(5 * time.Second); gogc() == 100; { // until Run has set its first value
		if time.Now().After(deadline) {
			t.Fatal("GOGC still 100 with a 16 MiB headroom and a small heap")
		}
		time.Sleep(time.Millisecond)
	}
	cycles := func() uint64 {
		s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
		metrics.Read(s)
		return s[0].Value.Uint64()
	}
	start := cycles()
	var sink []byte
	for i := 0; i < 256; i++ { // 256 MiB of garbage, 1 MiB at a time
		sink = make([]byte, 1<<20)
		sink[0] = byte(i)
	}
	_ = sink
	if n := cycles() - start; n < 2 {
		t.Fatalf("%d collections while 256 MiB were allocated with a %d MiB headroom (GOGC %d)", n, headroom>>20, gogc())
	}
}

// The pacer's GOGC gives the live heap the highest Goal of the last Hold, not the Goal of the live
// heap alone: after a dip the goal stays where it was (the scavenger would otherwise return the
// memory above the lower goal to the kernel, to be faulted in again at the next burst).
func TestPacerHoldsTheHighestGoal(t *testing.T) {
	const mib = 1 << 20
	pc := pacer{headroom: 64 * mib, hold: 30 * time.Second}
	t0 := time.Unix(1000, 0)
	steps := []struct {
		after time.Duration
		live  uint64
		want  int
	}{
		{0, 100 * mib, 100},                // Goal 200 MiB: Go's default
		{time.Second, 40 * mib, 400},       // 40 MiB live, goal still 200 MiB (Percent alone: 160)
		{2 * time.Second, 80 * mib, 150},   // 80 -> 200 MiB
		{20 * time.Second, 50 * mib, 300},  // still within 30 s of the 200 MiB goal
		{31 * time.Second, 50 * mib, 220},  // the 200 MiB goal has expired; 80's 160 MiB (at 2 s) holds
		{33 * time.Second, 50 * mib, 128},  // all earlier goals expired but 50's own (114 MiB)
		{34 * time.Second, 0, 1600},        // nothing live: the ceiling, as Percent
		{35 * time.Second, 300 * mib, 100}, // a higher goal replaces the window at once
	}
	for _, st := range steps {
		if got := pc.collected(t0.Add(st.after), st.live); got != st.want {
			t.Errorf("at %v, live %d MiB: GOGC %d, want %d", st.after, st.live/mib, got, st.want)
		}
	}
	if len(pc.window) != 1 {
		t.Errorf("window holds %d goals after a highest one, want 1", len(pc.window))
	}
}

// Run sets GOGC after each collection: once the live heap has fallen from 100 MiB to 40 MiB, the
// goal stays at the 200 MiB it had (GOGC 400, where the live heap alone would give 160).
func TestRunHoldsTheGoalAfterACollection(t *testing.T) {
	startRun(t, 64<<20)
	live := make([][]byte, 100)
	for i := range live {
		live[i] = make([]byte, 1<<20)
	}
	waitGOGC := func(ok func(uint64) bool, what string) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !ok(gogc()); {
			if time.Now().After(deadline) {
				t.Fatalf("GOGC %d, want %s", gogc(), what)
			}
			runtime.GC()
			time.Sleep(time.Millisecond)
		}
	}
	runtime.GC()
	waitGOGC(func(p uint64) bool { return p <= 110 }, "~100 with 100 MiB live and a 64 MiB headroom")
	clear(live[40:])
	runtime.GC()
	waitGOGC(func(p uint64) bool { return p >= 350 }, "~400 (the 200 MiB goal held) with 40 MiB live")
	runtime.KeepAlive(live)
}

// startRun runs Run with headroom (GOGC unset, starting from 100) until the test ends, then puts
// GOGC back.
func startRun(t *testing.T, headroom uint64) {
	t.Setenv("GOGC", "")
	before := debug.SetGCPercent(100)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { Run(ctx, headroom); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		debug.SetGCPercent(before)
	})
}
