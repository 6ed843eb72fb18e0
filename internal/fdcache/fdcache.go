// Package fdcache bounds the descriptors held by files that are used now and then: a broker with
// ten thousand partitions cannot keep every partition's files open under an open files limit of
// tens of thousands. A File is opened on demand and stays open while it is used (pinned); once
// released it waits in a least-recently-used list, and the oldest ones are closed when more than
// the cache's limit are open (the way RocksDB's max_open_files and Redpanda's open fd limit work).
// A busy file stays at the recent end and keeps its descriptor; an idle one costs none.
//
// A file closed by the cache may hold written data not yet fsynced: the fsync through the reopened
// descriptor makes it durable, and reports a write-back error that happened meanwhile (Linux 4.16
// on: errseq reports an error no descriptor has seen yet to the next fsync, also through a
// descriptor opened after the error), provided nothing else fsyncs the file in between.
package fdcache

import (
	"container/list"
	"errors"
	"os"
	"sync"
	"sync/atomic"
)

// ErrClosed is returned by Acquire on a closed File.
var ErrClosed = errors.New("fdcache: file closed")

// Cache is a bound on the open descriptors of its Files. Pinned files do not count against
// eviction: when every open file is pinned the cache holds more than its limit until some are
// released.
type Cache struct {
	mu    sync.Mutex
	limit int
	open  int       // files open, pinned or not
	idle  list.List // open, unpinned *File; least recently used first

	reopens   atomic.Int64
	evictions atomic.Int64
}

// New returns a cache that keeps at most limit unpinned files open (at least 1).
func New(limit int) *Cache {
	return &Cache{limit: max(1, limit)}
}

var (
	defaultOnce  sync.Once
	defaultCache *Cache
)

// Default is the process's cache, sized once from the open files limit (RLIMIT_NOFILE): a quarter
// of it, the rest being for what must stay open (active segments, sockets, dragonboat's files).
func Default() *Cache {
	defaultOnce.Do(func() { defaultCache = New(DefaultLimit()) })
	return defaultCache
}

// DefaultLimit is the size Default gets: a quarter of the open files limit, 4096 when the limit is
// unknown or unlimited, at least 16.
func DefaultLimit() int {
	n, ok := openFilesLimit()
	if !ok || n > 1<<30 {
		return 4096
	}
	return max(16, n/4)
}

// Limit is the number of unpinned files the cache keeps open at most.
func (c *Cache) Limit() int { return c.limit }

// Stats reports the files open now, how many times a file was reopened after being closed by the
// cache, and how many were closed to stay under the limit.
func (c *Cache) Stats() (open int, reopens, evictions int64) {
	c.mu.Lock()
	open = c.open
	c.mu.Unlock()
	return open, c.reopens.Load(), c.evictions.Load()
}

// Headroom is how many more descriptors the cache may come to hold before it evicts: its limit
// less the files it holds open now (0 when over).
func (c *Cache) Headroom() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return max(0, c.limit-c.open)
}

// File is a file whose descriptor the cache may close while it is not pinned, and reopen (same
// path, same flags without O_CREATE, O_TRUNC and O_EXCL) when it is next acquired. Methods are safe
// for concurrent use.
type File struct {
	c      *Cache
	path   string
	flag   int
	f      *os.File
	pins   int
	elem   *list.Element // in c.idle while open and unpinned
	closed bool
}

// Open opens path now (so that creating it, or failing to, happens here) and hands it to the
// cache, unpinned.
func (c *Cache) Open(path string, flag int, perm os.FileMode) (*File, error) {
	f, err := os.OpenFile(path, flag, perm)
	if err != nil {
		return nil, err
	}
	return c.Adopt(f, path, flag), nil
}

// Adopt hands an open file to the cache, unpinned; path is where it is reopened from (the file's
// name now, if it was renamed since it was opened).
func (c *Cache) Adopt(f *os.File, path string, flag int) *File {
	h := &File{c: c, path: path, flag: flag &^ (os.O_CREATE | os.O_TRUNC | os.O_EXCL), f: f}
	c.mu.Lock()
	c.open++
	h.elem = c.idle.PushBack(h)
	c.evictLocked()
	c.mu.Unlock()
	return h
}

// Path is the file's path.
func (h *File) Path() string { return h.path }

// Acquire pins the file and returns its descriptor, reopening it if the cache closed it. The
// descriptor is valid until the matching Release.
func (h *File) Acquire() (*os.File, error) {
	c := h.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if h.closed {
		return nil, ErrClosed
	}
	if h.f == nil {
		// Under the lock: opens are a few microseconds and rare (a cold file), and a concurrent
		// Acquire of the same file must not open it twice.
		f, err := os.OpenFile(h.path, h.flag, 0)
		if err != nil {
			return nil, err
		}
		h.f = f
		c.open++
		c.reopens.Add(1)
	} else if h.elem != nil {
		c.idle.Remove(h.elem)
		h.elem = nil
	}
	h.pins++
	c.evictLocked()
	return h.f, nil
}

// Release unpins the file once; the last release makes it the most recently used of the
// evictable files.
func (h *File) Release() {
	c := h.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if h.pins <= 0 {
		panic("fdcache: Release without Acquire")
	}
	h.pins--
	if h.pins == 0 && h.f != nil && !h.closed {
		h.elem = c.idle.PushBack(h)
		c.evictLocked()
	}
}

// Close closes the descriptor, if open, for good: Acquire fails afterwards. The caller must not
// hold a pin it still uses.
func (h *File) Close() error {
	c := h.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if h.closed {
		return nil
	}
	h.closed = true
	if h.elem != nil {
		c.idle.Remove(h.elem)
		h.elem = nil
	}
	if h.f == nil {
		return nil
	}
	err := h.f.Close()
	h.f = nil
	c.open--
	return err
}

// evictLocked closes the least recently used unpinned files while more than the limit are open.
func (c *Cache) evictLocked() {
	for c.open > c.limit {
		e := c.idle.Front()
		if e == nil {
			return
		}
		h := e.Value.(*File)
		c.idle.Remove(e)
		h.elem = nil
		h.f.Close() // unpinned means clean (see the package comment): nothing to report
		h.f = nil
		c.open--
		c.evictions.Add(1)
	}
}
