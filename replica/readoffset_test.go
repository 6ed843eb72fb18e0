package replica

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
)

// TestReadOffsetError: the one answer to "may a consumer read from here" (Fetch asks it before
// reading, Read inside): out of range outside [log start, high watermark], except while a restart
// replays records above the high watermark, which a consumer must retry, not reset from.
func TestReadOffsetError(t *testing.T) {
	p := &Partition{}
	p.hw.Store(10)
	p.replayTo.Store(20)
	for _, c := range []struct {
		offset int64
		want   error
	}{
		{4, kerr.OffsetOutOfRange}, // below the log start
		{5, nil},
		{10, nil}, // at the high watermark: nothing yet, not an error
		{15, kerr.NotLeaderForPartition},
		{20, kerr.NotLeaderForPartition},
		{21, kerr.OffsetOutOfRange},
	} {
		if got := p.ReadOffsetError(c.offset, 5); got != c.want {
			t.Errorf("offset %d: %v, want %v", c.offset, got, c.want)
		}
	}
}
