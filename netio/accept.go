package netio

import (
	"sync"
	"time"
)

// acceptBackoff is how long a listener waits after an accept failed for lack of descriptors or
// memory before trying again: the connection stays in the kernel's queue, and spinning on it would
// only burn the CPU the rest of the broker needs to finish requests and close connections.
const acceptBackoff = 10 * time.Millisecond

// acceptLogEvery bounds the log of failing accepts: out of descriptors, an accept fails every
// acceptBackoff until something closes, which would be a hundred lines a second.
const acceptLogEvery = 10 * time.Second

// acceptFailures throttles the log of failing accepts to one line per acceptLogEvery, with the
// count of failures since the last line. Safe for concurrent use (every uring loop shares one).
type acceptFailures struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

// failed records a failing accept and logs it unless a line was written less than acceptLogEvery ago.
func (a *acceptFailures) failed(co *core, err error) {
	a.mu.Lock()
	now := time.Now()
	if !a.last.IsZero() && now.Sub(a.last) < acceptLogEvery {
		a.suppressed++
		a.mu.Unlock()
		return
	}
	n := a.suppressed
	a.last, a.suppressed = now, 0
	a.mu.Unlock()
	co.log.Warn("netio: accept failed; retrying every 10ms (raise the open files limit if out of descriptors)",
		"err", err, "failures_since_last_line", n)
}
