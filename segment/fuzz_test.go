package segment

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// seedLog is a small valid segment file: a few batches with contiguous offsets from 0.
func seedLog() []byte {
	var out []byte
	var next int64
	for i, n := range []int{1, 3, 2, 5} {
		b := makeBatch(n, 5+i*7, int64(1000+i))
		PutBaseOffset(b, next)
		next += int64(n)
		out = append(out, b...)
	}
	return out
}

func FuzzParseHeader(f *testing.F) {
	f.Add(makeBatch(1, 10, 1))
	f.Add(make([]byte, HeaderSize))
	f.Add([]byte{0, 1, 2})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHeader(b)
		if err != nil {
			if !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrBadMagic) && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if h.Magic != 2 || h.Size() < HeaderSize {
			t.Fatalf("accepted header %+v", h)
		}
		if h.Size() <= len(b) {
			Validate(b[:h.Size()]) // must not panic
		}
	})
}

func FuzzValidate(f *testing.F) {
	f.Add(makeBatch(1, 10, 1))
	f.Add(makeBatch(7, 100, 1700000000000))
	f.Add(makeBatch(2, 0, -1))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := Validate(b)
		if err != nil {
			if !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrBadMagic) && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if h.Size() != len(b) || h.RecordCount < 0 || (h.RecordCount > 0 && h.NextOffset()-h.BaseOffset != int64(h.RecordCount)) {
			t.Fatalf("accepted %+v for %d bytes", h, len(b))
		}
		// The broker-owned fields keep the batch valid.
		c := append([]byte(nil), b...)
		PutBaseOffset(c, 12345)
		PutPartitionLeaderEpoch(c, 9)
		SetLogAppendTime(c, 1700000000000)
		if _, err := Validate(c); err != nil {
			t.Fatalf("after setting broker fields: %v", err)
		}
	})
}

// FuzzRecovery opens arbitrary bytes as a segment file (and arbitrary index files): Open must not
// fail or panic, must keep exactly a prefix of whole valid batches with offsets from 0, and the
// log must take appends afterwards.
func FuzzRecovery(f *testing.F) {
	good := seedLog()
	f.Add(good, []byte{})
	f.Add(good[:len(good)-7], []byte{0, 0, 0, 1, 0, 0, 0, 70})
	f.Add(append(append([]byte(nil), good...), make([]byte, 300)...), []byte{})
	f.Add(append(append([]byte(nil), good...), "garbage after the end"...), []byte{1, 2, 3})
	f.Add([]byte{}, []byte{})
	f.Add(make([]byte, 200), []byte{})
	f.Fuzz(func(t *testing.T, data, index []byte) {
		dir := t.TempDir()
		stem := filepath.Join(dir, "00000000000000000000")
		if err := os.WriteFile(stem+logSuffix, data, 0o644); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(stem+indexSuffix, index, 0o644)
		os.WriteFile(stem+timeIndexSuffix, append(append([]byte(nil), index...), index...), 0o644)
		opts := Options{SegmentBytes: 64 << 10, IndexIntervalBytes: 64, RetentionBytes: -1}
		l, err := Open(dir, opts)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer crash(l) // Close would fsync: slow and pointless here
		size := l.Size()
		if size > int64(len(data)) {
			t.Fatalf("log holds %d bytes of %d", size, len(data))
		}
		var got []byte
		if size > 0 {
			r, err := l.Read(0, len(data)+1)
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			got, err = r.AppendTo(nil)
			r.Release()
			if err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(got, data[:size]) {
			t.Fatalf("read %d bytes, not the file's prefix of %d", len(got), size)
		}
		var next int64
		for b := got; len(b) > 0; {
			h, err := ParseHeader(b)
			if err != nil || h.Size() > len(b) {
				t.Fatalf("kept a bad batch: %v", err)
			}
			if _, err := Validate(b[:h.Size()]); err != nil || h.BaseOffset != next {
				t.Fatalf("kept batch at offset %d (want %d): %v", h.BaseOffset, next, err)
			}
			next = h.NextOffset()
			b = b[h.Size():]
		}
		if l.NextOffset() != next {
			t.Fatalf("NextOffset %d, batches end at %d", l.NextOffset(), next)
		}
		if base, err := l.Append(makeBatch(2, 3, 5)); err != nil || base != next {
			t.Fatalf("Append after recovery: %d, %v", base, err)
		}
	})
}
