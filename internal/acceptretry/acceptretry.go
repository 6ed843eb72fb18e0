// Package acceptretry paces a listener whose accepts fail for lack of descriptors or memory: it
// waits Backoff before trying again (the connection stays in the kernel's queue; spinning on it
// would only burn the CPU the rest of the process needs to finish work and close descriptors) and
// logs the failures at most once per LogEvery, with their count (out of descriptors, an accept
// fails every Backoff until something closes: a hundred lines a second otherwise). netio's Kafka
// listeners and raftnet's Raft listener share it.
package acceptretry

import (
	"log/slog"
	"sync"
	"time"
)

// Backoff is the wait after a failed accept before the next.
const Backoff = 10 * time.Millisecond

// LogEvery bounds the log of failing accepts to one line per this long.
const LogEvery = 10 * time.Second

// Failures throttles the log of one listener's (or one group of listeners') failing accepts. The
// zero value is ready; safe for concurrent use.
type Failures struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

// Failed records a failing accept and logs msg with err unless a line was written less than
// LogEvery ago.
func (a *Failures) Failed(log *slog.Logger, msg string, err error) {
	a.mu.Lock()
	now := time.Now()
	if !a.last.IsZero() && now.Sub(a.last) < LogEvery {
		a.suppressed++
		a.mu.Unlock()
		return
	}
	n := a.suppressed
	a.last, a.suppressed = now, 0
	a.mu.Unlock()
	log.Warn(msg, "err", err, "failures_since_last_line", n)
}
