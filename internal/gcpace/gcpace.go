// Package gcpace keeps Go's garbage collector from running many times a second on a broker whose
// live heap is small. With GOGC=100 the collector runs each time the heap grows by its live size:
// a broker holding 10 MB live and allocating 40 MB/s (dragonboat copies every proposal) collected
// four times a second, and each cycle's mark phase takes a quarter of the processors (half a core
// of two) plus assists from the goroutines that allocate, which showed in the produce latency tail
// (results/2026-12-07-2core-vm-latency-s8/). The pacer here raises GOGC so that the heap may grow
// by at least a fixed headroom between cycles, and lets it fall back to GOGC's own 100 as the live
// heap grows past that headroom: memory beyond the default is bounded by the headroom, or by the
// highest heap goal of the last Hold (see Hold).
package gcpace

import (
	"context"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"time"
)

// DefaultHeadroom is the least the heap may grow between two collections.
const DefaultHeadroom = 64 << 20

const liveHeapMetric = "/gc/heap/live:bytes"

// goHeapMinimum is the heap size below which Go does not collect at GOGC=100; GOGC scales it
// (runtime/mgcpacer.go: heapMinimum = 4 MiB * GOGC / 100).
const goHeapMinimum = 4 << 20

// Percent is the GOGC value giving a live heap of live bytes at least headroom bytes of growth,
// never below 100 (Go's default). It is at most the value whose scaled heap minimum is the
// headroom: above it the minimum, not the live heap, would set the goal, so a small heap (before
// the first collection the live heap reads 0) would grow far past the headroom: at the former cap
// of 10,000 to 400 MiB before the first collection, every page of it fresh memory the kernel had to
// fault in (60,000 page faults per GB of a 20 s rf=3 run, the brokers' largest kernel cost).
func Percent(live, headroom uint64) int {
	return percentFor(live, Goal(live, headroom), headroom)
}

// Goal is the heap size Percent lets a live heap of live bytes reach before the next collection:
// live plus the headroom or, past it, plus live (GOGC=100).
func Goal(live, headroom uint64) uint64 {
	return live + max(headroom, live)
}

// percentFor is the GOGC value that gives a live heap of live bytes the heap goal target, within
// Percent's bounds (at least 100, at most the ceiling where the scaled heap minimum is the headroom).
func percentFor(live, target, headroom uint64) int {
	if live == 0 {
		live = 1
	}
	p := uint64(100)
	if target > live {
		p = (target - live) * 100 / live
	}
	ceiling := headroom * 100 / goHeapMinimum
	switch {
	case ceiling < 100 || p < 100:
		return 100
	case p > ceiling:
		return int(ceiling)
	}
	return int(p)
}

// Hold is how long the heap goal stays at the highest Goal of the collections in that time. A
// broker's live heap is mostly data in flight (received frames, proposals) and swings by a third
// from one collection to the next; a goal that followed it made Go's scavenger, which keeps at
// most 110% of the current goal, hand the memory above a low goal back to the kernel, and the next
// burst fault it in again: ~1,000 page faults a second per broker under a steady rf=3 load, each
// ~24 µs on the VM measured (results/2026-12-08-2core-vm-gcpace-hold-s11/).
const Hold = 30 * time.Second

// pacer chooses GOGC after each collection: the value that gives the live heap then the highest
// Goal of the last Hold.
type pacer struct {
	headroom uint64
	hold     time.Duration
	// window holds the Goals of the last hold that a later, higher one has not superseded:
	// oldest first, goals decreasing (a sliding-window maximum; the first is the highest).
	window []timedGoal
}

type timedGoal struct {
	at   time.Time
	goal uint64
}

// collected records a collection at now that left live bytes live, and returns the GOGC to set.
func (pc *pacer) collected(now time.Time, live uint64) int {
	g := Goal(live, pc.headroom)
	for len(pc.window) > 0 && pc.window[len(pc.window)-1].goal <= g {
		pc.window = pc.window[:len(pc.window)-1]
	}
	pc.window = append(pc.window, timedGoal{now, g})
	for now.Sub(pc.window[0].at) > pc.hold {
		pc.window = pc.window[1:]
	}
	return percentFor(live, pc.window[0].goal, pc.headroom)
}

// Run sets GOGC after every collection (pacer) until ctx ends, then restores the value it found.
// It does nothing when the GOGC environment variable is set: an operator's choice stands.
func Run(ctx context.Context, headroom uint64) {
	if os.Getenv("GOGC") != "" || headroom == 0 {
		return
	}
	h := &hook{
		pc:     pacer{headroom: headroom, hold: Hold},
		prev:   debug.SetGCPercent(Percent(0, headroom)), // nothing collected yet
		sample: [1]metrics.Sample{{Name: liveHeapMetric}},
	}
	arm(&sentinel{h: h}) // the hook runs only from here on: h needs no lock until then
	<-ctx.Done()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stopped = true
	debug.SetGCPercent(h.prev)
}

// hook is Run's state, used from the finalizer goroutine after each collection.
type hook struct {
	mu      sync.Mutex
	pc      pacer
	prev    int // GOGC before Run
	stopped bool
	sample  [1]metrics.Sample
}

// sentinel is garbage the moment it is armed, so each collection finds it unreachable and runs
// its finalizer, which arms it again: Go's way of calling back after every collection.
type sentinel struct {
	h *hook
	_ [16]byte // not a tiny allocation (those share a block and may never be finalized)
}

func arm(s *sentinel) { runtime.SetFinalizer(s, collected) }

func collected(s *sentinel) {
	h := s.h
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped {
		return
	}
	metrics.Read(h.sample[:])
	if h.sample[0].Value.Kind() == metrics.KindUint64 {
		debug.SetGCPercent(h.pc.collected(time.Now(), h.sample[0].Value.Uint64()))
	}
	arm(s)
}
