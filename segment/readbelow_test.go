package segment

import "testing"

// TestReadBelowStopsAtBound: ReadBelow never returns a batch at or past its bound, within one segment
// and across rolled segments, and an offset at the bound reads empty.
func TestReadBelowStopsAtBound(t *testing.T) {
	l, err := Open(t.TempDir(), Options{SegmentBytes: 8 << 10, RetentionBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := 0; i < 30; i++ { // 3 records per batch, several batches per segment
		if _, err := l.Append(makeBatch(3, 500, int64(i))); err != nil {
			t.Fatal(err)
		}
	}
	for bound := int64(3); bound <= l.NextOffset(); bound += 3 {
		for off := int64(0); off <= bound; off++ {
			r, err := l.ReadBelow(off, 1<<20, bound)
			if err != nil {
				t.Fatal(err)
			}
			b, err := r.AppendTo(nil)
			r.Release()
			if err != nil {
				t.Fatal(err)
			}
			if off == bound {
				if len(b) != 0 {
					t.Fatalf("read at the bound %d returned %d bytes", bound, len(b))
				}
				continue
			}
			var last int64 = -1
			for len(b) > 0 {
				h, err := ParseHeader(b)
				if err != nil {
					t.Fatal(err)
				}
				last = h.NextOffset()
				b = b[h.Size():]
			}
			if last != bound {
				t.Fatalf("ReadBelow(%d, bound %d) ends at offset %d, want exactly the bound", off, bound, last)
			}
		}
	}
}
