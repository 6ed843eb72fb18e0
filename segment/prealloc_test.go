//go:build linux

package segment

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// diskUse is what a file really holds on disk (allocated blocks, as du counts them) and its apparent size.
func diskUse(t *testing.T, path string) (allocated, size int64) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		t.Skip("no stat blocks on this platform")
	}
	return st.Blocks * 512, fi.Size()
}

// skipWithoutFallocate skips when the file system under dir has no fallocate (preallocation is a no-op
// there, and so is this test).
func skipWithoutFallocate(t *testing.T, dir string) {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "probe"))
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if err := syscall.Fallocate(int(f.Fd()), 0, 0, 4096); err != nil {
		t.Skipf("fallocate unsupported under %s: %v", dir, err)
	}
}

// TestEmptyLogReservesLittleDisk: a fresh log with a 1 GiB segment size holds one small first chunk of
// real disk, not 64 MiB (or the segment size); so does the fresh segment a roll starts, and a log
// reopened after Close.
func TestEmptyLogReservesLittleDisk(t *testing.T) {
	dir := t.TempDir()
	skipWithoutFallocate(t, dir)
	l, err := Open(dir, Options{SegmentBytes: 1 << 30, RetentionBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	first := filepath.Join(dir, "00000000000000000000.log")
	alloc, size := diskUse(t, first)
	if alloc > minPreallocChunk || size != minPreallocChunk {
		t.Fatalf("fresh segment: %d bytes allocated, %d apparent; want at most %d allocated, %d apparent",
			alloc, size, minPreallocChunk, minPreallocChunk)
	}
	if alloc < minPreallocChunk/2 {
		t.Fatalf("fresh segment: only %d bytes allocated: the first chunk is not reserved", alloc)
	}
	if _, err := l.Append(batchOfSize(4096)); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l, err = Open(dir, Options{SegmentBytes: 1 << 30, RetentionBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if alloc, _ := diskUse(t, first); alloc > minPreallocChunk {
		t.Fatalf("reopened segment holding 4 KiB: %d bytes allocated, want at most %d", alloc, minPreallocChunk)
	}
}

// TestPreallocationGrowsWithUse: as a segment fills, its reservation doubles from the first chunk up to
// maxPreallocChunk and then grows by maxPreallocChunk; real disk held is never more than about twice the
// data (or one max chunk beyond it), and appends inside the reservation leave the file size alone (no
// metadata update per append: a handful of fallocates per segment).
func TestPreallocationGrowsWithUse(t *testing.T) {
	dir := t.TempDir()
	skipWithoutFallocate(t, dir)
	l, err := Open(dir, Options{SegmentBytes: 1 << 30, RetentionBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	path := filepath.Join(dir, "00000000000000000000.log")
	const fsSlack = 64 << 10 // block rounding and file-system extent bookkeeping
	batch := batchOfSize(64 << 10)
	_, lastSize := diskUse(t, path)
	growths, appends := 0, 0
	var written int64
	for written < maxPreallocChunk+8<<20 {
		if _, err := l.Append(batch); err != nil {
			t.Fatal(err)
		}
		appends++
		written += int64(len(batch))
		alloc, size := diskUse(t, path)
		if size < written {
			t.Fatalf("after %d bytes the file is %d bytes", written, size)
		}
		if size != lastSize {
			growths++
			lastSize = size
		}
		limit := max(int64(minPreallocChunk), min(2*written, written+maxPreallocChunk))
		if alloc > limit+fsSlack {
			t.Fatalf("after %d bytes: %d bytes allocated, want at most %d", written, alloc, limit)
		}
	}
	// 128 KiB doubling to 64 MiB is 9 growths, then one to 128 MiB.
	if growths > 10 {
		t.Fatalf("%d appends grew the file %d times, want at most 10", appends, growths)
	}
	if alloc, _ := diskUse(t, path); alloc < 2*maxPreallocChunk-fsSlack {
		t.Fatalf("past the first max chunk: %d bytes allocated, want the reservation to reach %d", alloc, 2*maxPreallocChunk)
	}
	if l.Size() != written {
		t.Fatalf("log size %d, want %d", l.Size(), written)
	}
}
