package segment

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sluicebroker/sluice/internal/diskio"
	"github.com/sluicebroker/sluice/metrics"
)

// Defaults for zero Options fields.
const (
	DefaultSegmentBytes       = 1 << 30
	DefaultIndexIntervalBytes = 4096

	// maxSegmentBytes keeps positions in the index's 32 bits (Kafka's segment.bytes is an int32 too).
	maxSegmentBytes = math.MaxInt32
)

// Options configure a Log. The zero value of SegmentBytes and IndexIntervalBytes means the
// default; note that RetentionBytes 0 means "keep nothing but the active segment": use -1 for
// unlimited.
type Options struct {
	SegmentBytes       int64         // roll size; segment files are preallocated to this (default 1 GiB)
	SegmentAge         time.Duration // roll when the active segment's first batch is older; 0 = never (segment.ms)
	IndexIntervalBytes int           // one sparse index entry per this many bytes (default 4096)
	RetentionBytes     int64         // delete oldest whole segments while the rest still holds this much; <0 = unlimited
	RetentionAge       time.Duration // delete segments whose newest batch is older; <=0 = forever
}

func (o Options) withDefaults() Options {
	if o.SegmentBytes <= 0 {
		o.SegmentBytes = DefaultSegmentBytes
	}
	o.SegmentBytes = min(o.SegmentBytes, maxSegmentBytes)
	if o.IndexIntervalBytes <= 0 {
		o.IndexIntervalBytes = DefaultIndexIntervalBytes
	}
	return o
}

// Checkpoint is the "last applied" marker of the Raft state machine above the log.
type Checkpoint struct {
	AppliedIndex uint64 // Raft index of the last entry whose effects are in the log
	NextOffset   int64  // the log's NextOffset at that moment
	Extra        []byte // opaque caller state (the replica's producer table), up to a few MB
}

// Log is one partition's log: a directory of segments named by base offset. One goroutine
// appends (Append, TruncateTo, EnforceRetention, Sync may come from others and are serialized);
// any number read concurrently.
type Log struct {
	dir string

	// writeMu serializes everything that changes the log; Append holds it for the write itself
	// so readers (mu) are held off only for the bookkeeping.
	writeMu     sync.Mutex
	opts        Options
	unsynced    []*segment // changed since the last Sync
	syncing     []syncItem // Sync's scratch
	dataSyncing []*segment // SyncData's scratch
	dirDirty    bool       // files created or removed since the last directory fsync
	pending     Checkpoint // set by SetCheckpoint, written by the next Sync
	hasCp       bool
	failed      error // a failed fdatasync: the page cache may have dropped writes, so stop
	closed      bool
	ckpt        *checkpointFile
	loadedCkp   Checkpoint

	mu     sync.RWMutex // guards segs and the "mu" fields of segments
	segs   []*segment   // by base offset; the last is active
	active *segment
	shut   bool // closed: readers get ErrClosed

	syncMu sync.Mutex // one Sync at a time, so checkpoint slots alternate cleanly

	cleanMu sync.Mutex   // one Clean at a time
	clean   cleanerState // the cleaner checkpoint (clean.go): written under cleanMu and writeMu
	// swapMu serializes the cleaner's swap of a sealed segment, which fsyncs without writeMu so
	// appends go on, with the other changes of the segment list but appends: retention, truncation,
	// close. Taken before writeMu.
	swapMu sync.Mutex
}

// Open opens the log in dir, creating dir if missing, and recovers it: every segment is checked
// from its last trustworthy index entry on, a torn or garbage tail is cut, indexes are rebuilt
// where damaged, and segments after a hole in the offsets are removed. Every CRC-valid batch of
// the contiguous prefix is kept; Checkpoint() tells what was last synced.
func Open(dir string, opts Options) (*Log, error) {
	opts = opts.withDefaults()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	l := &Log{dir: dir, opts: opts, clean: readCleanerState(dir)}
	ck, err := openCheckpoint(dir)
	if err != nil {
		return nil, err
	}
	l.ckpt = ck
	if err := l.recover(); err != nil {
		l.ckpt.close()
		for _, s := range l.segs {
			s.release()
		}
		return nil, err
	}
	l.loadedCkp = l.ckpt.choose(l.active.next)
	// Files created or removed by recovery become durable with the first Sync.
	l.dirDirty = true
	return l, nil
}

// recover loads the segments, cleans the directory and prepares the active segment.
func (l *Log) recover() error {
	names, err := os.ReadDir(l.dir)
	if err != nil {
		return err
	}
	var bases []int64
	stems := map[string]bool{}
	for _, de := range names {
		if base, ok := parseSegmentName(de.Name()); ok && de.Type().IsRegular() {
			bases = append(bases, base)
			stems[strings.TrimSuffix(de.Name(), logSuffix)] = true
		}
	}
	// Orphan indexes (their .log was deleted) would be taken for a new segment's later.
	for _, de := range names {
		name := de.Name()
		for _, suffix := range []string{indexSuffix, timeIndexSuffix, sumSuffix} {
			if stem, ok := strings.CutSuffix(name, suffix); ok && len(stem) == 20 && !stems[stem] {
				os.Remove(filepath.Join(l.dir, name))
			}
		}
	}
	removeCleanerLeftovers(l.dir, names)
	sort.Slice(bases, func(i, j int) bool { return bases[i] < bases[j] })

	sc := newScanner()
	interval := int64(l.opts.IndexIntervalBytes)
	for i, base := range bases {
		if n := len(l.segs); n > 0 && l.segs[n-1].next < base && base <= l.clean.gapsBelow {
			// The cleaner removed the last batches of the segment before: its offsets run to here.
			l.segs[n-1].next = base
		}
		if n := len(l.segs); n > 0 && l.segs[n-1].next != base {
			// A hole or an overlap: what follows was never synced (Sync makes a prefix durable),
			// so drop it rather than serve offsets that are not dense.
			for _, b := range bases[i:] {
				(&segment{path: segmentPath(l.dir, b)}).removeFiles()
			}
			break
		}
		s, rebuilt, err := recoverSegment(segmentPath(l.dir, base), base, interval, l.clean.gapsBelow, sc)
		if err != nil {
			return err
		}
		l.segs = append(l.segs, s)
		if rebuilt {
			// Cut what was untrusted now; the next Sync writes and vouches for the rest.
			if err := s.dropSum(); err != nil {
				return err
			}
			if err := s.truncateIndexFiles(s.flushed); err != nil {
				return err
			}
			s.closeIndexes()
			l.markDirty(s)
		}
	}
	// An empty segment that is not the last one can only come from damage; its successors were
	// removed above (their base differs), so at most the last segment is empty now.
	for i, s := range l.segs {
		if i == len(l.segs)-1 {
			break
		}
		// Unsynced: if the cut is lost, the next Open cuts again.
		if s.end < fileSize(s.data) {
			if err := s.data.Truncate(s.end); err != nil {
				return err
			}
		}
		if !s.dirty {
			s.closeIndexes()
			l.thin(s)
		}
	}
	if len(l.segs) == 0 {
		s, err := createSegment(l.dir, 0, l.allocTarget(0))
		if err != nil {
			return err
		}
		l.segs = append(l.segs, s)
	}
	l.active = l.segs[len(l.segs)-1]
	return l.activate(l.active)
}

// The active segment is preallocated ahead of its data so that appends within the reservation change no
// file metadata. The reservation grows with what the segment holds: a fresh segment reserves
// minPreallocChunk, each time appends reach its end the reservation doubles (so a segment that fills
// does a handful of fallocates, none per append), up to maxPreallocChunk; past that it grows
// maxPreallocChunk at a time. An empty partition therefore holds minPreallocChunk of disk, not a whole
// chunk: with thousands of partitions a fixed 64 MiB each filled a disk before any data arrived (as did
// preallocating the whole segment size before that).
const (
	minPreallocChunk = 128 << 10
	maxPreallocChunk = 64 << 20
)

// allocTarget is the preallocated size for a segment holding end bytes: below maxPreallocChunk the
// smallest power-of-two multiple of minPreallocChunk above end, then the next maxPreallocChunk boundary
// above end; never beyond the segment size.
func (l *Log) allocTarget(end int64) int64 {
	var t int64
	if end < maxPreallocChunk {
		t = minPreallocChunk
		for t <= end {
			t <<= 1
		}
	} else {
		t = (end/maxPreallocChunk + 1) * maxPreallocChunk
	}
	return min(l.opts.SegmentBytes, t)
}

// reserve grows s's preallocation (see allocTarget) until need bytes fit. A batch larger than the
// segment size (alone in its segment) gets exactly its size.
func (l *Log) reserve(s *segment, need int64) error {
	if need <= s.alloc {
		return nil
	}
	target := max(need, l.allocTarget(need-1))
	if err := preallocate(s.data, target); err != nil {
		return err
	}
	s.alloc = target
	return nil
}

// activate prepares s to take appends: preallocated, age clock started. Its index files stay
// closed: Sync opens them to write (see syncIndexes).
func (l *Log) activate(s *segment) error {
	if s.end < l.opts.SegmentBytes {
		if err := l.reserve(s, s.end+1); err != nil {
			return err
		}
	}
	s.firstAppendMs = 0
	if s.end > 0 {
		// The first batch's timestamp stands in for when the segment started.
		var hb [HeaderSize]byte
		if _, err := s.data.ReadAt(hb[:], 0); err == nil {
			if h, err := ParseHeader(hb[:]); err == nil && h.MaxTimestamp > 0 {
				s.firstAppendMs = h.MaxTimestamp
			}
		}
		if s.firstAppendMs == 0 {
			s.firstAppendMs = time.Now().UnixMilli()
		}
	}
	return nil
}

func fileSize(f *os.File) int64 {
	st, err := f.Stat()
	if err != nil {
		return -1
	}
	return st.Size()
}

// Append writes one whole batch (already validated by the caller, e.g. with Validate) at the end
// of the log. It sets the batch's base offset to NextOffset() in place in batch, and returns it.
func (l *Log) Append(batch []byte) (int64, error) {
	return l.append(batch, false, 0)
}

// AppendWithEpoch is Append for bytes the caller may not modify (a Raft entry that is also being
// sent to followers): the batch goes to the file with its base offset set to NextOffset() and its
// partition leader epoch set to epoch, the first 16 header bytes from a patched copy and the rest
// straight from batch (one pwritev), so the payload is never copied.
func (l *Log) AppendWithEpoch(batch []byte, epoch int32) (int64, error) {
	return l.append(batch, true, epoch)
}

func (l *Log) append(batch []byte, keep bool, epoch int32) (int64, error) {
	if len(batch) < HeaderSize {
		return 0, ErrTruncated
	}
	size := int64(len(batch))
	if int64(binary.BigEndian.Uint32(batch[offLength:]))+lengthPrefix != size {
		return 0, fmt.Errorf("%w: length field disagrees with %d bytes", ErrCorrupt, size)
	}
	delta := int64(int32(binary.BigEndian.Uint32(batch[offLastOffsetDelta:])))
	if delta < 0 {
		return 0, fmt.Errorf("%w: last offset delta %d", ErrCorrupt, delta)
	}
	maxTs := int64(binary.BigEndian.Uint64(batch[offMaxTimestamp:]))

	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	if err := l.usable(); err != nil {
		return 0, err
	}
	s := l.active
	if s.end > 0 && l.mustRoll(s, size, delta) {
		var err error
		if s, err = l.roll(); err != nil {
			return 0, err
		}
	}
	if err := l.reserve(s, s.end+size); err != nil {
		return 0, err
	}
	base := s.next
	if keep {
		var head [patchedHeaderLen]byte
		copy(head[:], batch)
		PutBaseOffset(head[:], base)
		PutPartitionLeaderEpoch(head[:], epoch)
		if err := writeAt2(s.data, head[:], batch[patchedHeaderLen:], s.end); err != nil {
			return 0, err
		}
	} else {
		PutBaseOffset(batch, base)
		if _, err := s.data.WriteAt(batch, s.end); err != nil {
			return 0, err
		}
	}
	if !s.dirty {
		s.dirty = true
		l.unsynced = append(l.unsynced, s)
	}
	if s.firstAppendMs == 0 {
		s.firstAppendMs = time.Now().UnixMilli()
	}

	l.mu.Lock()
	s.addIndexPoint(int64(l.opts.IndexIntervalBytes))
	s.end += size
	s.next = base + delta + 1
	s.maxTs = max(s.maxTs, maxTs)
	l.mu.Unlock()
	s.sinceIndex += size
	return base, nil
}

// mustRoll says whether a batch of size bytes and the given last offset delta goes to a new
// segment: the active one is full, too old, or its index or relative offsets would overflow.
func (l *Log) mustRoll(s *segment, size, delta int64) bool {
	o := &l.opts
	switch {
	case s.end+size > o.SegmentBytes:
		return true
	case s.next+delta-s.base > math.MaxInt32:
		return true
	case s.indexFull(int64(o.IndexIntervalBytes)):
		return true
	case o.SegmentAge > 0 && time.Now().UnixMilli()-s.firstAppendMs >= o.SegmentAge.Milliseconds():
		return true
	}
	return false
}

// roll seals the active segment and starts a new one at NextOffset. Caller holds writeMu.
func (l *Log) roll() (*segment, error) {
	old := l.active
	s, err := createSegment(l.dir, old.next, l.allocTarget(0))
	if err != nil {
		return nil, err
	}
	// Seal: no preallocated tail (as Kafka does); the next Sync makes it durable and writes its
	// index files for good.
	if err := old.data.Truncate(old.end); err != nil {
		s.release()
		s.removeFiles()
		return nil, err
	}
	l.markDirty(old)
	l.dirDirty = true
	l.mu.Lock()
	l.segs = append(l.segs, s)
	l.active = s
	l.mu.Unlock()
	return s, nil
}

func (l *Log) markDirty(s *segment) {
	if !s.dirty {
		s.dirty = true
		l.unsynced = append(l.unsynced, s)
	}
}

// usable returns why the log takes no more changes, if so. Caller holds writeMu.
func (l *Log) usable() error {
	if l.closed {
		return ErrClosed
	}
	return l.failed
}

// NextOffset is the log end offset: the base offset the next Append gets.
func (l *Log) NextOffset() int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.active.next
}

// StartOffset is the first offset the log still holds.
func (l *Log) StartOffset() int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.segs[0].base
}

// Size is the number of bytes of batches held (not counting preallocation).
func (l *Log) Size() int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	var n int64
	for _, s := range l.segs {
		n += s.end
	}
	return n
}

// Dir is the log's directory.
func (l *Log) Dir() string { return l.dir }

// SegmentCount is the number of segment files, the active one included.
func (l *Log) SegmentCount() int {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return len(l.segs)
}

// SetCheckpoint remembers c; the next Sync makes it durable along with the data. The log keeps
// c.Extra until then: the caller must not modify it.
func (l *Log) SetCheckpoint(c Checkpoint) {
	l.writeMu.Lock()
	l.pending, l.hasCp = c, true
	l.writeMu.Unlock()
}

// Checkpoint is the checkpoint found at Open: the newest one synced whose NextOffset the
// recovered log reaches (so everything it describes is in the log), or the zero value.
func (l *Log) Checkpoint() Checkpoint { return l.loadedCkp }

// Sync makes every appended batch durable (fdatasync of the segment files, plus the directory
// when files came or went) and, at the same time, the checkpoint set since the last Sync, if any
// (see checkpoint.go); then it writes the index files and their sums for the data now durable
// (sealed segments' for good, fsynced). Appends may continue while it waits for the disk.
func (l *Log) Sync() error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()

	l.writeMu.Lock()
	if err := l.usable(); err != nil {
		l.writeMu.Unlock()
		return err
	}
	todo := l.syncing[:0]
	for _, s := range l.unsynced {
		s.dirty = false
		if !s.deleted {
			s.acquire()
			todo = append(todo, syncItem{s: s, entries: len(s.entries), gen: s.gen})
		}
	}
	clear(l.unsynced)
	l.unsynced = l.unsynced[:0]
	dirDirty := l.dirDirty
	l.dirDirty = false
	cp, hasCp := l.pending, l.hasCp
	l.pending, l.hasCp = Checkpoint{}, false
	l.writeMu.Unlock()

	// The checkpoint's fdatasync runs alongside the data's (see checkpoint.go for why that is safe).
	var err, cpErr error
	var cpDone chan struct{}
	if hasCp {
		if err = l.ckpt.stage(cp); err == nil {
			cpDone = make(chan struct{})
			go func() {
				cpErr = l.ckpt.commit()
				close(cpDone)
			}()
		}
	}
	if err == nil {
		err = l.syncData(todo, dirDirty)
	}
	if cpDone != nil {
		<-cpDone
		if err == nil {
			err = cpErr
		}
	}
	if err == nil {
		err = l.syncIndexes(todo)
	}
	for i := range todo {
		todo[i].s.release()
		todo[i] = syncItem{}
	}
	l.syncing = todo[:0]
	if err != nil {
		l.writeMu.Lock()
		l.fail(err)
		l.writeMu.Unlock()
	}
	return err
}

// SyncData makes every appended batch durable: fdatasync of the segments changed since the last
// Sync, and of the directory when files came or went. Unlike Sync it writes no checkpoint and no
// index (the next Sync does, and recovery rebuilds index points past the last vouched one): this is
// the per-save fsync of a log that is also the Raft log.
func (l *Log) SyncData() error {
	ds, err := l.BeginSyncData()
	if err != nil {
		return err
	}
	for _, s := range ds.segs {
		if err == nil {
			err = datasync(s.data)
		}
	}
	return ds.Done(err)
}

// DataSync is SyncData in two steps, for a caller that fdatasyncs several logs' files together
// (raftlog: every partition of a Raft save at once): BeginSyncData, then
// fdatasync the Files, then Done with the result. One at a time per log, like SyncData.
type DataSync struct {
	l        *Log
	segs     []*segment
	dirDirty bool
}

// BeginSyncData takes the files SyncData would sync, held open until Done.
func (l *Log) BeginSyncData() (DataSync, error) {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	if err := l.usable(); err != nil {
		return DataSync{}, err
	}
	todo := l.dataSyncing[:0]
	for _, s := range l.unsynced {
		if !s.deleted {
			s.acquire()
			todo = append(todo, s)
		}
	}
	dirDirty := l.dirDirty
	l.dirDirty = false
	return DataSync{l: l, segs: todo, dirDirty: dirDirty}, nil
}

// AppendFiles appends the files to fdatasync to files.
func (d *DataSync) AppendFiles(files []*os.File) []*os.File {
	for _, s := range d.segs {
		files = append(files, s.data)
	}
	return files
}

// Done releases the files, fsyncs the directory when files came or went, and records a failure
// (err: the fdatasyncs' result) as SyncData does.
func (d *DataSync) Done(err error) error {
	l := d.l
	if l == nil {
		return err
	}
	for i, s := range d.segs {
		s.release()
		d.segs[i] = nil
	}
	if err == nil && d.dirDirty {
		err = syncDir(l.dir)
	}
	l.writeMu.Lock()
	l.dataSyncing = d.segs[:0]
	if err != nil {
		l.dirDirty = l.dirDirty || d.dirDirty
		l.fail(err)
	}
	l.writeMu.Unlock()
	return err
}

// syncItem is a segment being synced and the index entries its data covered when Sync began.
type syncItem struct {
	s       *segment
	entries int
	gen     uint64
}

// syncData fdatasyncs the segments' data and, if asked, the directory.
func (l *Log) syncData(todo []syncItem, dir bool) error {
	for _, it := range todo {
		if err := datasync(it.s.data); err != nil {
			return err
		}
	}
	if dir {
		return syncDir(l.dir)
	}
	return nil
}

// syncIndexes writes the index entries whose data is now durable and vouches for them; a sealed
// segment's index files are then final: fsynced. Every segment's index files are closed again
// afterwards: Sync is rare (a Raft snapshot, a few per thousand entries), so reopening three files
// for it costs little, while keeping them open cost three descriptors per partition (a broker with
// ten thousand partitions ran out of them).
func (l *Log) syncIndexes(todo []syncItem) error {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	for _, it := range todo {
		s := it.s
		if s.deleted || s.gen != it.gen { // gone, or cut by TruncateTo meanwhile
			continue
		}
		if err := s.flushIndex(it.entries); err != nil {
			return err
		}
		if err := s.writeSum(); err != nil {
			return err
		}
		if s != l.active && !s.dirty {
			if err := s.syncIndexes(); err != nil {
				return err
			}
			l.thin(s)
		}
		s.closeIndexes()
	}
	return nil
}

// The file system calls the logs share.
var (
	preallocate = diskio.Preallocate
	datasync    = timedDatasync
	syncDir     = diskio.SyncDir
)

// SetOptions changes the configuration at run time; it applies from the next append (segment size
// of new segments, index interval) or retention pass.
func (l *Log) SetOptions(opts Options) {
	l.writeMu.Lock()
	l.opts = opts.withDefaults()
	l.writeMu.Unlock()
}

// Options returns the configuration in force.
func (l *Log) Options() Options {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	return l.opts
}

// TruncateTo drops every batch with base offset >= offset, which must be a batch boundary or
// NextOffset(); NextOffset() becomes offset. The cut is durable when TruncateTo returns, so a
// crash cannot bring the dropped batches back. Readers must not be reading the dropped range.
func (l *Log) TruncateTo(offset int64) error {
	l.swapMu.Lock()
	defer l.swapMu.Unlock()
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	if err := l.usable(); err != nil {
		return err
	}
	l.mu.RLock()
	start, next := l.segs[0].base, l.active.next
	l.mu.RUnlock()
	if offset < start || offset > next {
		return fmt.Errorf("%w: truncate to %d, log holds [%d, %d)", ErrOffsetOutOfRange, offset, start, next)
	}
	if offset == next {
		return nil
	}
	i := sort.Search(len(l.segs), func(i int) bool { return l.segs[i].base > offset }) - 1
	s := l.segs[i]
	pos, maxTs, err := boundaryAt(s, offset)
	if err != nil {
		return err
	}
	entries := s.entries
	if s.thinned {
		// s becomes active again: it needs its whole index, which its files then get anew.
		if entries, err = scanEntries(s, int64(l.opts.IndexIntervalBytes), l.clean.gapsBelow); err != nil {
			return err
		}
		s.flushed, s.thinned = 0, false
	}

	// Everything after s goes; s keeps its prefix and becomes active.
	dropped := l.segs[i+1:]
	entries = entries[:sort.Search(len(entries), func(k int) bool { return int64(entries[k].pos) >= pos })]
	l.mu.Lock()
	l.segs = l.segs[: i+1 : i+1]
	l.active = s
	// A fresh array: readers holding the old one must never see it rewritten.
	s.entries = append([]indexEntry(nil), entries...)
	s.end, s.next, s.maxTs = pos, offset, maxTs
	l.mu.Unlock()

	for _, d := range dropped {
		d.deleted = true
		d.removeFiles()
		d.release()
	}
	l.dropDeletedUnsynced()
	// The index is about to change: withdraw its sum first.
	if err := s.dropSum(); err != nil {
		return l.fail(err)
	}
	s.gen++
	s.sinceIndex = pos
	if n := len(s.entries); n > 0 {
		s.sinceIndex = pos - int64(s.entries[n-1].pos)
	}
	if err := s.truncateIndexFiles(len(s.entries)); err != nil {
		return l.fail(err)
	}
	// Cut the bytes for good, then preallocate again (zeros) for the appends to come.
	if err := s.data.Truncate(pos); err != nil {
		return l.fail(err)
	}
	s.alloc = pos
	if err := datasync(s.data); err != nil {
		return l.fail(err)
	}
	if err := syncDir(l.dir); err != nil {
		return l.fail(err)
	}
	l.dirDirty = false
	// What is left is durable, so its index can be vouched for again.
	if err := s.flushIndex(len(s.entries)); err != nil {
		return l.fail(err)
	}
	if err := s.writeSum(); err != nil {
		return l.fail(err)
	}
	s.closeIndexes()
	return l.fail(l.activate(s))
}

// fail records a failure that leaves the files in an unknown state; nil passes through.
func (l *Log) fail(err error) error {
	if err != nil && l.failed == nil {
		l.failed = err
	}
	return err
}

func (l *Log) dropDeletedUnsynced() {
	kept := l.unsynced[:0]
	for _, s := range l.unsynced {
		if !s.deleted {
			kept = append(kept, s)
		}
	}
	clear(l.unsynced[len(kept):])
	l.unsynced = kept
}

// boundaryAt finds the position of the batch starting at offset in s, and the largest MaxTimestamp
// before it. Caller holds writeMu, so s does not change.
func boundaryAt(s *segment, offset int64) (pos, maxTs int64, err error) {
	pos, off := indexFor(s.entries, s.base, offset)
	maxTs = int64(math.MinInt64)
	if i := sort.Search(len(s.entries), func(k int) bool { return int64(s.entries[k].pos) > pos }); i > 0 {
		maxTs = s.entries[i-1].tsBefore
	}
	var hb [HeaderSize]byte
	for pos < s.end {
		if off == offset {
			return pos, maxTs, nil
		}
		if off > offset {
			break
		}
		h, err := readHeader(s.data, pos, &hb)
		if err != nil {
			return 0, 0, err
		}
		if h.BaseOffset > off { // a gap the cleaner left
			if off = h.BaseOffset; off >= offset {
				continue
			}
		}
		maxTs = max(maxTs, h.MaxTimestamp)
		pos += int64(h.Size())
		off = h.NextOffset()
	}
	if pos == s.end && off == offset {
		return pos, maxTs, nil
	}
	return 0, 0, fmt.Errorf("%w: %d", ErrNotBatchBoundary, offset)
}

// readHeader reads and parses the batch header at pos.
func readHeader(f *os.File, pos int64, hb *[HeaderSize]byte) (Header, error) {
	if _, err := f.ReadAt(hb[:], pos); err != nil {
		return Header{}, fmt.Errorf("segment: reading header at %d of %s: %w", pos, f.Name(), err)
	}
	return ParseHeader(hb[:])
}

// EnforceRetention deletes the oldest segments that are past RetentionAge (their newest batch is
// older than now minus it) or not needed for RetentionBytes (the segments after them still hold
// at least that much), never the active segment. Readers holding a deleted segment keep its file
// open until they release it.
func (l *Log) EnforceRetention(now time.Time) (int, error) {
	return l.EnforceRetentionBelow(now, math.MaxInt64)
}

// EnforceRetentionBelow is EnforceRetention that also keeps every segment holding an offset at or
// above floor: a log that is the Raft log keeps what Raft may still read back.
func (l *Log) EnforceRetentionBelow(now time.Time, floor int64) (int, error) {
	l.swapMu.Lock()
	defer l.swapMu.Unlock()
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	if err := l.usable(); err != nil {
		return 0, err
	}
	return l.dropOldest(l.retainable(now, floor))
}

// DeleteBefore deletes the oldest segments that hold only offsets below start (a log start offset
// moved by DeleteRecords), never the active segment nor one holding an offset at or above floor.
func (l *Log) DeleteBefore(start, floor int64) (int, error) {
	l.swapMu.Lock()
	defer l.swapMu.Unlock()
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	if err := l.usable(); err != nil {
		return 0, err
	}
	n := 0
	for n < len(l.segs)-1 && l.segs[n].next <= min(start, floor) {
		n++
	}
	return l.dropOldest(n)
}

// dropOldest deletes the n oldest segments. Caller holds writeMu.
func (l *Log) dropOldest(n int) (int, error) {
	if n == 0 {
		return 0, nil
	}
	gone := append([]*segment(nil), l.segs[:n]...)
	l.mu.Lock()
	l.segs = append(l.segs[:0:0], l.segs[n:]...)
	l.mu.Unlock()
	var err error
	for _, s := range gone {
		s.deleted = true
		if e := s.removeFiles(); e != nil && err == nil {
			err = e
		}
		s.release()
	}
	l.dropDeletedUnsynced()
	l.dirDirty = true
	return n, err
}

// retainable is how many of the oldest segments retention deletes. Caller holds writeMu.
func (l *Log) retainable(now time.Time, floor int64) int {
	o := l.opts
	nowMs := now.UnixMilli()
	var total int64
	for _, s := range l.segs {
		total += s.end
	}
	n := 0
	for ; n < len(l.segs)-1; n++ {
		s := l.segs[n]
		byAge := o.RetentionAge > 0 && newestMs(s) < nowMs-o.RetentionAge.Milliseconds()
		bySize := o.RetentionBytes >= 0 && total-s.end >= o.RetentionBytes
		if !byAge && !bySize || s.next > floor {
			break
		}
		total -= s.end
	}
	return n
}

// RetentionTarget is the log start offset retention would leave at now with no floor: every
// offset below it is due for deletion.
func (l *Log) RetentionTarget(now time.Time) int64 {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	if l.usable() != nil {
		return 0
	}
	n := l.retainable(now, math.MaxInt64)
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.segs[n].base
}

// newestMs is the time of a segment's newest batch: its largest timestamp, or, when its batches
// carry none (-1), the file's modification time, as Kafka does.
func newestMs(s *segment) int64 {
	if s.maxTs >= 0 {
		return s.maxTs
	}
	if st, err := s.data.Stat(); err == nil {
		return st.ModTime().UnixMilli()
	}
	return math.MaxInt64 // unknown: keep it
}

// Close syncs the log (data, indexes, pending checkpoint), cuts the active segment's
// preallocated tail and closes the files (a file still held by a ReadResult closes on Release).
func (l *Log) Close() error {
	l.swapMu.Lock() // a cleaner's swap in flight finishes first
	defer l.swapMu.Unlock()
	err := l.Sync()
	if errors.Is(err, ErrClosed) {
		return err
	}
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	if l.closed {
		return ErrClosed
	}
	l.closed = true
	if l.failed == nil && err == nil {
		// Cut the preallocated tail and leave a durable, vouched-for index for the next Open.
		s := l.active
		if err = s.data.Truncate(s.end); err == nil {
			if err = datasync(s.data); err == nil {
				if err = s.flushIndex(len(s.entries)); err == nil {
					if err = s.writeSum(); err == nil {
						err = s.syncIndexes()
					}
				}
			}
		}
	}
	l.closeFiles()
	return err
}

func (l *Log) closeFiles() {
	l.ckpt.close()
	l.mu.Lock()
	segs := l.segs
	l.shut = true
	l.mu.Unlock()
	for _, s := range segs {
		s.release()
	}
}

// Delete closes the log and removes its directory (topic deletion).
func (l *Log) Delete() error {
	// A failing Close is no reason to keep a deleted topic's files.
	_ = l.Close()
	return os.RemoveAll(l.dir)
}

// timedDatasync is diskio.Datasync observed in the fsync latency histogram (a clock read per
// fsync: nothing beside the disk's round trip).
func timedDatasync(f *os.File) error {
	start := time.Now()
	err := diskio.Datasync(f)
	metrics.FsyncSeconds.Observe(time.Since(start).Seconds())
	return err
}
