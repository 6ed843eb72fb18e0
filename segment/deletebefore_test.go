package segment

import (
	"math"
	"testing"
)

// TestDeleteBefore deletes the whole segments below a log start offset moved by DeleteRecords: the
// segment holding the start stays, so does the active one, and so does everything at or above the
// floor given.
func TestDeleteBefore(t *testing.T) {
	l := openLog(t, t.TempDir(), smallOpts)
	defer l.Close()
	var m model
	for range 60 {
		appendBatch(t, l, &m, makeBatch(2, 900, 1))
	}
	segs := l.SegmentCount()
	if segs < 4 {
		t.Fatalf("%d segments: the test needs several", segs)
	}
	if n, err := l.DeleteBefore(0, math.MaxInt64); err != nil || n != 0 {
		t.Fatalf("DeleteBefore(0): %d deleted, %v", n, err)
	}
	// A floor below the start keeps what it covers.
	if n, err := l.DeleteBefore(60, 10); err != nil || l.StartOffset() > 10 {
		t.Fatalf("DeleteBefore(60, floor 10): %d deleted, start %d, %v", n, l.StartOffset(), err)
	}
	n, err := l.DeleteBefore(60, math.MaxInt64)
	if err != nil || n == 0 {
		t.Fatalf("DeleteBefore(60): %d deleted, %v", n, err)
	}
	if start := l.StartOffset(); start > 60 || start == 0 {
		t.Fatalf("start offset %d after DeleteBefore(60): want the base of the segment holding 60", start)
	}
	m.keepFrom(l.StartOffset())
	checkLog(t, l, &m)
	if _, err := l.DeleteBefore(math.MaxInt64, math.MaxInt64); err != nil || l.SegmentCount() != 1 {
		t.Fatalf("DeleteBefore(everything): %d segments left (the active one stays), %v", l.SegmentCount(), err)
	}
}
