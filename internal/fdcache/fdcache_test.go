package fdcache

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

func openN(t *testing.T, c *Cache, n int) []*File {
	t.Helper()
	dir := t.TempDir()
	files := make([]*File, n)
	for i := range files {
		f, err := c.Open(filepath.Join(dir, fmt.Sprint(i)), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		files[i] = f
		t.Cleanup(func() { f.Close() })
	}
	return files
}

// TestBoundAndReopen: no more than the limit stay open; an evicted file reopens with what was
// written through its earlier descriptor (and is not truncated again by the O_TRUNC it was created
// with).
func TestBoundAndReopen(t *testing.T) {
	c := New(3)
	files := openN(t, c, 10)
	if open, _, ev := c.Stats(); open != 3 || ev != 7 {
		t.Fatalf("open %d, evictions %d; want 3 and 7", open, ev)
	}
	for i, h := range files {
		f, err := h.Acquire()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt([]byte{byte(i)}, 0); err != nil {
			t.Fatal(err)
		}
		h.Release()
	}
	for i, h := range files {
		f, err := h.Acquire()
		if err != nil {
			t.Fatal(err)
		}
		var b [1]byte
		if _, err := f.ReadAt(b[:], 0); err != nil || b[0] != byte(i) {
			t.Fatalf("file %d: read %v %v", i, b, err)
		}
		h.Release()
	}
	if open, reopens, _ := c.Stats(); open != 3 || reopens == 0 {
		t.Fatalf("open %d, reopens %d", open, reopens)
	}
}

// TestPinnedNotEvicted: a pinned file keeps its descriptor whatever the pressure; the cache goes
// over its limit rather than close it, and comes back under once it is released.
func TestPinnedNotEvicted(t *testing.T) {
	c := New(2)
	files := openN(t, c, 2)
	f0, err := files[0].Acquire()
	if err != nil {
		t.Fatal(err)
	}
	f1, err := files[1].Acquire()
	if err != nil {
		t.Fatal(err)
	}
	more := openN(t, c, 3) // all three go in and out again: the two pinned cannot
	if _, err := f0.Stat(); err != nil {
		t.Fatalf("pinned file closed: %v", err)
	}
	if open, _, _ := c.Stats(); open != 2 {
		t.Fatalf("open %d, want the 2 pinned", open)
	}
	g, err := more[0].Acquire()
	if err != nil {
		t.Fatal(err)
	}
	if open, _, _ := c.Stats(); open != 3 {
		t.Fatalf("open %d with three pinned, want 3 (over the limit)", open)
	}
	more[0].Release()
	files[0].Release()
	if open, _, _ := c.Stats(); open != 2 {
		t.Fatalf("open %d after releases, want 2", open)
	}
	if _, err := f1.Stat(); err != nil {
		t.Fatalf("still pinned file closed: %v", err)
	}
	_ = g
	files[1].Release()
}

// TestLeastRecentlyUsedGoesFirst: the file used last keeps its descriptor.
func TestLeastRecentlyUsedGoesFirst(t *testing.T) {
	c := New(2)
	files := openN(t, c, 2)
	f0, _ := files[0].Acquire()
	files[0].Release() // 0 is now the most recent
	openN(t, c, 1)     // evicts 1
	if files[0].f != f0 || files[1].f != nil {
		t.Fatalf("want 0 open and 1 evicted: %v %v", files[0].f, files[1].f)
	}
}

// TestClosed: Close releases the descriptor for good.
func TestClosed(t *testing.T) {
	c := New(4)
	files := openN(t, c, 1)
	if err := files[0].Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := files[0].Acquire(); err != ErrClosed {
		t.Fatalf("Acquire after Close: %v", err)
	}
	if open, _, _ := c.Stats(); open != 0 {
		t.Fatalf("open %d", open)
	}
}
