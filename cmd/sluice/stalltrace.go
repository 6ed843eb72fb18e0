package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/trace"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicebroker/sluice/metrics"
)

// Stall traces (--debug-stall-trace DIR): the Go runtime's flight recorder keeps the last few
// seconds of execution trace, and a Produce answered after --debug-stall-threshold or later has
// them written to DIR, a second after it (so the trace holds the stall and what followed), at most
// one file per stallTraceSpacing and stallTraceFiles in all. `go tool trace` opens a file;
// `go tool trace -pprof=sched|syscall|sync FILE` says what the goroutines waited for.
const (
	stallTraceWindow  = 4 * time.Second
	stallTraceSpacing = 5 * time.Second
	stallTraceFiles   = 30
)

// startStallTrace starts the flight recorder and the hook; the returned func stops both.
func startStallTrace(dir string, threshold time.Duration, logger *slog.Logger) (func(), error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	fr := trace.NewFlightRecorder(trace.FlightRecorderConfig{MinAge: stallTraceWindow, MaxBytes: 256 << 20})
	if err := fr.Start(); err != nil {
		return nil, fmt.Errorf("flight recorder: %w", err)
	}
	var busy atomic.Bool // a write is scheduled or running
	var last atomic.Int64
	var written atomic.Int32
	metrics.OnSlowRequest(threshold, func(key int16, d time.Duration) {
		if key != int16(kmsg.Produce) || written.Load() >= stallTraceFiles ||
			time.Since(time.Unix(0, last.Load())) < stallTraceSpacing || !busy.CompareAndSwap(false, true) {
			return
		}
		at := time.Now()
		last.Store(at.UnixNano())
		go func() {
			defer busy.Store(false)
			time.Sleep(time.Second)
			name := filepath.Join(dir, fmt.Sprintf("stall-%s-%dms.trace", at.UTC().Format("150405.000"), d.Milliseconds()))
			f, err := os.Create(name)
			if err != nil {
				logger.Warn("stall trace", "err", err)
				return
			}
			_, err = fr.WriteTo(f)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				logger.Warn("stall trace", "file", name, "err", err)
				return
			}
			written.Add(1)
			logger.Info("stall trace written", "file", name, "produce_ms", d.Milliseconds())
		}()
	})
	return func() {
		metrics.OnSlowRequest(0, nil)
		fr.Stop()
	}, nil
}
