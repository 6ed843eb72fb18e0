package segment

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
)

// File name suffixes, as in Kafka: 00000000000000000000.log, .index, .timeindex.
const (
	logSuffix       = ".log"
	indexSuffix     = ".index"
	timeIndexSuffix = ".timeindex"

	offsetEntrySize = 8  // relative offset uint32, position uint32
	timeEntrySize   = 12 // timestamp int64, relative offset uint32
)

// maxIndexEntries bounds one segment's index (Kafka's 10 MiB segment.index.bytes); a segment rolls
// when it is full. A variable so tests can make it small.
var maxIndexEntries = 10 << 20 / offsetEntrySize

// indexEntry is one sparse index point: the batch that starts at pos has base offset base+rel, and
// tsBefore is the largest MaxTimestamp of the batches before it in the segment. The .index file
// holds (rel, pos) and the .timeindex file (tsBefore, rel), one entry each per point.
type indexEntry struct {
	rel      uint32
	pos      uint32
	tsBefore int64
}

// segment is one file of the log plus its indexes.
//
// Fields marked "mu" may be read under Log.mu.RLock and are changed under Log.mu.Lock by the
// writer, which also holds Log.writeMu; fields marked "writer" belong to the writeMu holder.
type segment struct {
	base int64
	path string // of the .log file; indexes share the stem
	data *os.File

	end     int64        // mu: logical bytes held (the file may be longer: preallocation)
	alloc   int64        // writer: bytes preallocated while active (appends below it change no metadata)
	next    int64        // mu: offset after the last batch
	maxTs   int64        // mu: largest MaxTimestamp held, math.MinInt64 when empty
	entries []indexEntry // mu: sparse index; elements below len are never rewritten in place

	index, timeIndex, sum *os.File // writer: index files, nil when closed (see index.go)
	flushed               int      // writer: entries already in the index files
	crcIndex, crcTime     uint32   // writer: CRC-32C of the index files' flushed contents
	sinceIndex            int64    // writer: bytes appended since the last index point
	firstAppendMs         int64    // writer: wall clock of its first batch (segment.ms), 0 when empty
	dirty                 bool     // writer: changed since the last Sync (queued in Log.unsynced)
	deleted               bool     // writer: removed from the log
	gen                   uint64   // writer: bumped by TruncateTo, so a Sync in flight skips its index
	thinned               bool     // writer: entries hold only every sealedIndexStride-th index point

	refs atomic.Int32 // one for the Log while listed, one per ReadResult holding it
}

func segmentPath(dir string, base int64) string {
	return filepath.Join(dir, fmt.Sprintf("%020d%s", base, logSuffix))
}

func (s *segment) stem() string { return strings.TrimSuffix(s.path, logSuffix) }

// parseSegmentName returns the base offset of a segment file name, or false.
func parseSegmentName(name string) (int64, bool) {
	stem, ok := strings.CutSuffix(name, logSuffix)
	if !ok || len(stem) != 20 {
		return 0, false
	}
	base, err := strconv.ParseInt(stem, 10, 64)
	return base, err == nil && base >= 0
}

// createSegment makes an empty segment at base, preallocated to size bytes.
func createSegment(dir string, base, size int64) (*segment, error) {
	s := &segment{base: base, next: base, maxTs: math.MinInt64, path: segmentPath(dir, base)}
	f, err := os.OpenFile(s.path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	s.data = f
	if err := preallocate(f, size); err != nil {
		f.Close()
		os.Remove(s.path)
		return nil, err
	}
	s.alloc = size
	// The index files are created by the first Sync that has entries or a sum to write for it:
	// an idle partition holds no descriptor for them.
	s.refs.Store(1)
	return s, nil
}

func (s *segment) acquire() { s.refs.Add(1) }

// release drops one reference; the last one closes the files.
func (s *segment) release() {
	if s.refs.Add(-1) == 0 {
		s.data.Close()
		s.closeIndexes()
	}
}

// removeFiles unlinks the segment's files: the .log first, so a crash part-way leaves only
// orphan index files, which Open deletes.
func (s *segment) removeFiles() error {
	err := os.Remove(s.path)
	for _, suffix := range []string{indexSuffix, timeIndexSuffix, sumSuffix} {
		if e := os.Remove(s.stem() + suffix); e != nil && !errors.Is(e, os.ErrNotExist) && err == nil {
			err = e
		}
	}
	return err
}

// indexFor returns the index point at or before offset: the position to scan from and that
// batch's base offset. Caller holds Log.mu (or owns a snapshot of entries).
func indexFor(entries []indexEntry, base, offset int64) (pos, off int64) {
	rel := offset - base
	i := sort.Search(len(entries), func(i int) bool { return int64(entries[i].rel) > rel })
	if i == 0 {
		return 0, base
	}
	e := entries[i-1]
	return int64(e.pos), base + int64(e.rel)
}

// addIndexPoint records an index point for a batch about to be written at s.end, when due.
// Caller holds Log.mu for writing.
func (s *segment) addIndexPoint(interval int64) {
	if s.sinceIndex < interval || s.end == 0 {
		return
	}
	s.entries = append(s.entries, indexEntry{rel: uint32(s.next - s.base), pos: uint32(s.end), tsBefore: s.maxTs})
	s.sinceIndex = 0
}

// indexFull reports whether the next due index point would overflow the index.
func (s *segment) indexFull(interval int64) bool {
	return len(s.entries) >= maxIndexEntries && s.sinceIndex >= interval
}
