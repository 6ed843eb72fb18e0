// Package gcpace keeps Go's garbage collector from running many times a second on a broker whose
// live heap is small. With GOGC=100 the collector runs each time the heap grows by its live size:
// a broker holding 10 MB live and allocating 40 MB/s (dragonboat copies every proposal) collected
// four times a second, and each cycle's mark phase takes a quarter of the processors (half a core
// of two) plus assists from the goroutines that allocate, which showed in the produce latency tail
// (results/2026-12-07-2core-vm-latency-s8/). The pacer here raises GOGC so that the heap may grow
// by at least a fixed headroom between cycles, and lets it fall back to GOGC's own 100 as the live
// heap grows past that headroom: memory beyond the default is bounded by the headroom.
package gcpace

import (
	"context"
	"os"
	"runtime/debug"
	"runtime/metrics"
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
	if live == 0 {
		live = 1
	}
	p := headroom * 100 / live
	ceiling := headroom * 100 / goHeapMinimum
	switch {
	case ceiling < 100 || p < 100:
		return 100
	case p > ceiling:
		return int(ceiling)
	}
	return int(p)
}

// Run re-reads the live heap every interval and sets GOGC from it (Percent) until ctx ends, then
// restores the value it found. It does nothing when the GOGC environment variable is set: an
// operator's choice stands.
func Run(ctx context.Context, headroom uint64, interval time.Duration) {
	if os.Getenv("GOGC") != "" || headroom == 0 {
		return
	}
	sample := []metrics.Sample{{Name: liveHeapMetric}}
	prev := debug.SetGCPercent(100)
	defer debug.SetGCPercent(prev)
	current := 100
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		metrics.Read(sample)
		if sample[0].Value.Kind() == metrics.KindUint64 {
			// Re-set only on a change of more than an eighth, not on every wobble of the live heap.
			if p := Percent(sample[0].Value.Uint64(), headroom); p > current+current/8 || p < current-current/8 {
				debug.SetGCPercent(p)
				current = p
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
