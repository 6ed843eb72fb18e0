//go:build linux

package segment

import (
	"os"
	"path/filepath"
	"testing"
)

// TestPreallocationGrowsByChunks: a fresh 1 GiB segment reserves one chunk, not the whole segment, and
// grows a chunk at a time as appends reach the end of what is reserved.
func TestPreallocationGrowsByChunks(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, Options{SegmentBytes: 1 << 30, RetentionBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	fileSize := func() int64 {
		t.Helper()
		fi, err := os.Stat(filepath.Join(dir, "00000000000000000000.log"))
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	if got := fileSize(); got != preallocChunk {
		t.Fatalf("fresh segment file is %d bytes, want one chunk (%d)", got, preallocChunk)
	}
	batch := batchOfSize(1 << 20)
	var written int64
	for written+int64(len(batch)) <= preallocChunk {
		if _, err := l.Append(batch); err != nil {
			t.Fatal(err)
		}
		written += int64(len(batch))
	}
	if got := fileSize(); got != preallocChunk {
		t.Fatalf("after %d bytes within the first chunk the file is %d bytes", written, got)
	}
	if _, err := l.Append(batch); err != nil {
		t.Fatal(err)
	}
	if got := fileSize(); got != 2*preallocChunk {
		t.Fatalf("after crossing the first chunk the file is %d bytes, want %d", got, 2*preallocChunk)
	}
	if l.Size() != written+int64(len(batch)) {
		t.Fatalf("log size %d, want %d", l.Size(), written+int64(len(batch)))
	}
}
