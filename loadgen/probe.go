package loadgen

import (
	"context"
	"time"
)

// probePeriod is how long the probe sleeps at a time.
const probePeriod = time.Millisecond

// probe sleeps probePeriod at a time until ctx ends and records, from measureFrom on, how much
// later than asked it woke up. A late wake-up means loadgen's goroutines could not run: the
// machine's cores were busy elsewhere (the broker, other processes) or loadgen's own garbage
// collector held them. Acknowledgements arriving meanwhile are timed late too, so a second whose
// publish p99 rises together with the probe's maximum is a stall of the client or the machine,
// not (only) of the broker.
func probe(ctx context.Context, rec *Recorder, measureFrom time.Time) {
	t := time.NewTimer(probePeriod)
	defer t.Stop()
	for {
		start := time.Now()
		t.Reset(probePeriod)
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if late := time.Since(start) - probePeriod; !now.Before(measureFrom) {
				rec.Record(int64(max(late, 0)))
			}
		}
	}
}
