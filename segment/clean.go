package segment

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/maphash"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/sluicebroker/sluice/batch"
)

// Log compaction (cleanup.policy=compact), Kafka's log cleaner for one log: two passes over sealed
// segments below an offset the caller chooses (for a Raft log: below the lowest offset Raft may still
// read back, so Raft never reads a rewritten position).
//
//  1. The offset map: key (a 128-bit hash) -> offset of its latest record, over the dirty part of the
//     log (from the cleaner's checkpoint on).
//  2. Every segment from the log start up to the end of the map is rewritten keeping a record only if
//     it is the latest for its key; tombstones (null values) and transaction markers whose transaction
//     kept no record go once delete.retention.ms has passed since the segment was first cleaned;
//     records of aborted transactions go at once.
//
// Kafka's batch rules: a rewritten batch keeps its base offset, last offset delta, timestamps and
// producer fields (so the records' own deltas stay valid and are copied verbatim), its codec, and gets
// a new count, length and CRC; a batch left without records disappears, leaving a gap in the offsets,
// also at a segment's end (a segment keeps its offset range: the next one's base). No empty batch is
// kept: Kafka keeps the last batch of each producer empty for its producer state, which lives here in
// the replica's checkpoint instead, and some clients (kafka-go 0.4) fail on an uncompressed empty batch.
//
// The swap of one segment is crash-safe: the cleaned copy is written beside it as NNN.log.cleaned and
// fsynced; then the index sum is removed (the index files no longer vouched for), the directory
// fsynced, the copy renamed over NNN.log (atomic) and the directory fsynced again, with retention,
// truncation and close held off (swapMu) but not appends: the writer lock is taken only to check the
// segment is still listed and to put the new one in its place.
// Recovery after kill -9 at any point finds the old or the new file whole, rebuilds the unvouched index
// from it, and deletes a leftover .cleaned file. Readers holding the old file keep reading it: the
// segment is reference counted and the renamed-over inode lives until the last reference goes.
//
// Gaps are accepted only below the offset the cleaner checkpoint promises (written durably before any
// swap): elsewhere a well-formed batch with an unexpected base offset is still stale bytes to cut.

const (
	cleanerCheckpointName = "cleaner-checkpoint"
	cleanedSuffix         = ".cleaned"
	cleanerMagic          = "SLCL"
	cleanerStateSize      = 4 + 8 + 8 + 4
)

// cleanerState is the cleaner checkpoint of a log: segments below gapsBelow may have offset gaps;
// the log below firstDirty has been cleaned.
type cleanerState struct {
	gapsBelow  int64
	firstDirty int64
}

func readCleanerState(dir string) cleanerState {
	b, err := os.ReadFile(filepath.Join(dir, cleanerCheckpointName))
	if err != nil || len(b) != cleanerStateSize || string(b[:4]) != cleanerMagic ||
		crc32.Checksum(b[:20], castagnoli) != binary.BigEndian.Uint32(b[20:]) {
		return cleanerState{}
	}
	return cleanerState{gapsBelow: int64(binary.BigEndian.Uint64(b[4:])), firstDirty: int64(binary.BigEndian.Uint64(b[12:]))}
}

// writeCleanerState replaces the checkpoint durably (temporary file, fsync, rename, directory fsync).
func writeCleanerState(dir string, st cleanerState) error {
	b := make([]byte, cleanerStateSize)
	copy(b, cleanerMagic)
	binary.BigEndian.PutUint64(b[4:], uint64(st.gapsBelow))
	binary.BigEndian.PutUint64(b[12:], uint64(st.firstDirty))
	binary.BigEndian.PutUint32(b[20:], crc32.Checksum(b[:20], castagnoli))
	tmp := filepath.Join(dir, cleanerCheckpointName+cleanedSuffix)
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = datasync(f)
	}
	if e := f.Close(); err == nil {
		err = e
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, cleanerCheckpointName))
	}
	if err == nil {
		err = syncDir(dir)
	}
	return err
}

// AllowGapsBelow records in dir, a log directory not open, that its segments below offset may have
// offset gaps: a replica receiving another's segments in a snapshot (which the sender's cleaner may
// have compacted) marks them so before opening them.
func AllowGapsBelow(dir string, offset int64) error {
	st := readCleanerState(dir)
	if st.gapsBelow >= offset {
		return nil
	}
	st.gapsBelow = offset
	return writeCleanerState(dir, st)
}

// removeCleanerLeftovers deletes cleaned copies a crash left before their swap.
func removeCleanerLeftovers(dir string, names []os.DirEntry) {
	for _, de := range names {
		if strings.HasSuffix(de.Name(), cleanedSuffix) {
			os.Remove(filepath.Join(dir, de.Name()))
		}
	}
}

// AbortedRange is an aborted transaction: the producer's transactional batches from First to Last
// (the abort marker's offset) are dropped by the cleaner.
type AbortedRange struct {
	ProducerID  int64
	First, Last int64
}

// CleanOptions steer one cleaning.
type CleanOptions struct {
	End              int64         // clean only sealed segments wholly below this offset
	Now              time.Time     // the clock for the lags and delete.retention.ms
	DeleteRetention  time.Duration // tombstones and empty transactions' markers outlive their first cleaning this long
	MinCompactionLag time.Duration // segments holding a record younger than this are not cleaned
	Aborted          []AbortedRange
	MaxKeys          int              // bound of the offset map (memory); 0: 1<<20 keys
	Throttle         func(n int64)    // called with the bytes read or written, may sleep (io bound)
	cleanedHook      func(i int) bool // tests: called before each swap; false stops the cleaning there (a crash)
}

// CleanStats says what one cleaning did.
type CleanStats struct {
	Segments   int   // segments rewritten
	Read       int64 // bytes read (both passes)
	Written    int64 // bytes written
	FirstDirty int64 // the cleaner checkpoint after it
}

// DirtyStats is how much of the cleanable part of a log is dirty (not cleaned yet).
type DirtyStats struct {
	CleanBytes, DirtyBytes int64
	// OldestDirtyMs is the newest timestamp of the first dirty segment (when the first dirty record
	// was at the latest written; max.compaction.lag.ms counts from it), -1 with nothing dirty.
	OldestDirtyMs int64
}

// Ratio is dirty / (clean + dirty), Kafka's dirty ratio.
func (d DirtyStats) Ratio() float64 {
	if d.DirtyBytes == 0 {
		return 0
	}
	return float64(d.DirtyBytes) / float64(d.CleanBytes+d.DirtyBytes)
}

// cleanable returns the sealed segments wholly below o.End whose newest record is older than
// o.MinCompactionLag, one reference taken on each. Caller holds no lock.
func (l *Log) cleanable(o *CleanOptions) []*segment {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.shut {
		return nil
	}
	var out []*segment
	lagMs := o.Now.Add(-o.MinCompactionLag).UnixMilli()
	for _, s := range l.segs[:len(l.segs)-1] {
		if s.next > o.End || (o.MinCompactionLag > 0 && s.maxTs > lagMs) {
			break
		}
		s.acquire()
		out = append(out, s)
	}
	return out
}

// Dirty reports the clean and dirty bytes of the part of the log a Clean with these options would
// consider.
func (l *Log) Dirty(o CleanOptions) DirtyStats {
	segs := l.cleanable(&o)
	l.cleanMu.Lock()
	firstDirty := l.clean.firstDirty
	l.cleanMu.Unlock()
	d := DirtyStats{OldestDirtyMs: -1}
	l.mu.RLock()
	for _, s := range segs {
		if s.next <= firstDirty {
			d.CleanBytes += s.end
		} else {
			if d.DirtyBytes == 0 {
				d.OldestDirtyMs = s.maxTs
			}
			d.DirtyBytes += s.end
		}
	}
	l.mu.RUnlock()
	for _, s := range segs {
		s.release()
	}
	return d
}

// Clean compacts the log (see the top of this file). One cleaning runs at a time per log; reads and
// appends go on meanwhile.
func (l *Log) Clean(o CleanOptions) (CleanStats, error) {
	l.cleanMu.Lock()
	defer l.cleanMu.Unlock()
	if o.MaxKeys <= 0 {
		o.MaxKeys = 1 << 20
	}
	if o.Throttle == nil {
		o.Throttle = func(int64) {}
	}
	segs := l.cleanable(&o)
	defer func() {
		for _, s := range segs {
			s.release()
		}
	}()
	st := l.clean
	stats := CleanStats{FirstDirty: st.firstDirty}
	d := 0
	for d < len(segs) && segs[d].next <= st.firstDirty {
		d++
	}
	if d == len(segs) {
		return stats, nil
	}
	c := &cleaner{o: &o, keys: newOffsetMap(), txnData: map[int64]bool{}, sc: newScanner()}

	// Pass 1: the offset map over the dirty segments, as many as the map holds.
	last := d
	for i := d; i < len(segs); i++ {
		if i > d && len(c.keys.m) >= o.MaxKeys {
			break
		}
		if err := c.scan(segs[i], func(h *Header, b []byte) error { return c.mapBatch(h, b) }); err != nil {
			return stats, err
		}
		last = i
	}
	mapEnd := segs[last].next

	// The promise that gaps may appear below mapEnd is durable before the first swap.
	if st.gapsBelow < mapEnd {
		st.gapsBelow = mapEnd
		if err := l.saveCleanerState(st); err != nil {
			return stats, err
		}
	}

	// Pass 2: rewrite every segment up to the end of the map.
	for i := 0; i <= last; i++ {
		s := segs[i]
		mtime := time.Time{}
		if fi, err := s.data.Stat(); err == nil {
			mtime = fi.ModTime()
		}
		cleanedBefore := s.next <= st.firstDirty
		c.dropDeletes = cleanedBefore && !mtime.IsZero() && !o.Now.Add(-o.DeleteRetention).Before(mtime)
		tmp := s.path + cleanedSuffix
		changed, written, err := c.rewrite(s, tmp)
		stats.Written += written
		if err != nil {
			os.Remove(tmp)
			return stats, err
		}
		if !changed {
			os.Remove(tmp)
			continue
		}
		// A segment cleaned before keeps the time of its first cleaning: delete.retention.ms counts from it.
		when := o.Now
		if cleanedBefore && !mtime.IsZero() {
			when = mtime
		}
		if err := os.Chtimes(tmp, when, when); err != nil {
			os.Remove(tmp)
			return stats, err
		}
		if o.cleanedHook != nil && !o.cleanedHook(i) {
			return stats, errCleanStopped
		}
		if err := l.swapCleaned(s, tmp, c.sc); err != nil {
			os.Remove(tmp)
			return stats, err
		}
		stats.Segments++
	}
	stats.Read = c.read
	st.firstDirty = mapEnd
	if err := l.saveCleanerState(st); err != nil {
		return stats, err
	}
	stats.FirstDirty = mapEnd
	return stats, nil
}

var errCleanStopped = errors.New("segment: cleaning stopped by a test hook")

// saveCleanerState makes the cleaner checkpoint durable and publishes it (l.clean is read under
// writeMu). A closed log's directory may already be another's (a snapshot installed): not touched.
// The fsyncs run without writeMu (appends go on); swapMu keeps Close out meanwhile.
func (l *Log) saveCleanerState(st cleanerState) error {
	l.swapMu.Lock()
	defer l.swapMu.Unlock()
	l.writeMu.Lock()
	err := l.usable()
	l.writeMu.Unlock()
	if err != nil {
		return err
	}
	if err := writeCleanerState(l.dir, st); err != nil {
		return err
	}
	l.writeMu.Lock()
	l.clean = st
	l.writeMu.Unlock()
	return nil
}

// swapCleaned puts the cleaned copy tmp in place of s (see the top of this file for the order). It
// holds swapMu throughout (no retention, truncation or close meanwhile) and writeMu only to check
// and to change the segment list, so appends are not held up by its fsyncs.
func (l *Log) swapCleaned(s *segment, tmp string, sc *scanner) error {
	l.swapMu.Lock()
	defer l.swapMu.Unlock()
	l.writeMu.Lock()
	err := l.usable()
	if err == nil {
		l.mu.RLock()
		listed := slices.Contains(l.segs, s)
		l.mu.RUnlock()
		if !listed || s == l.active {
			err = errGone
		} else {
			err = s.dropSum()
		}
	}
	l.writeMu.Unlock()
	if errors.Is(err, errGone) {
		return os.Remove(tmp) // retention deleted it meanwhile
	}
	if err != nil {
		return err
	}
	if swapHook != nil && !swapHook(1) {
		return errCleanStopped
	}
	if err := syncDir(l.dir); err != nil {
		return l.failLocked(err)
	}
	if err := os.Rename(tmp, s.path); err != nil {
		return l.failLocked(err)
	}
	if swapHook != nil && !swapHook(2) {
		return errCleanStopped
	}
	if err := syncDir(l.dir); err != nil {
		return l.failLocked(err)
	}
	ns, _, err := recoverSegment(s.path, s.base, int64(l.Options().IndexIntervalBytes), l.gapsBelow(), sc)
	if err != nil {
		return l.failLocked(err)
	}
	if ns.next > s.next || ns.end != fileSize(ns.data) {
		ns.release()
		return l.failLocked(fmt.Errorf("%w: cleaned %s ends at offset %d position %d, expected offset %d", ErrCorrupt, s.path, ns.next, ns.end, s.next))
	}
	ns.next = s.next // its last batches may be gone: its offsets still run to the next segment
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	// The old index files hold the old positions: cut them; the next Sync writes and vouches for the new.
	if err := ns.truncateIndexFiles(0); err != nil {
		ns.release()
		return l.fail(err)
	}
	ns.closeIndexes()
	l.markDirty(ns)
	l.mu.Lock()
	l.segs[slices.Index(l.segs, s)] = ns
	l.mu.Unlock()
	s.deleted = true
	s.closeIndexes()
	s.release()
	l.dropDeletedUnsynced()
	if swapHook != nil && !swapHook(3) {
		return errCleanStopped
	}
	return nil
}

var errGone = errors.New("segment: gone")

// failLocked is fail for a caller not holding writeMu.
func (l *Log) failLocked(err error) error {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	return l.fail(err)
}

// gapsBelow is the cleaner checkpoint's promise (l.clean is guarded by writeMu).
func (l *Log) gapsBelow() int64 {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	return l.clean.gapsBelow
}

// swapHook lets tests stop a swap after step 1 (sum removed), 2 (renamed) or 3 (done), as a crash.
var swapHook func(step int) bool

// cleaner is one cleaning's state.
type cleaner struct {
	o           *CleanOptions
	keys        *offsetMap
	txnData     map[int64]bool // producer id -> its open transaction kept a record (pass 2)
	dropDeletes bool           // the segment being rewritten is past its delete horizon
	sc          *scanner
	buf         []byte // one batch read
	plain       []byte // decompressed records
	kept        []byte // kept records
	out         []byte // the rewritten batch
	read        int64
}

// scan calls fn for each batch of s in order (b is only valid during the call).
func (c *cleaner) scan(s *segment, fn func(h *Header, b []byte) error) error {
	r := bufio.NewReaderSize(io.NewSectionReader(s.data, 0, s.end), 256<<10)
	for pos := int64(0); pos < s.end; {
		c.buf = growLen(c.buf[:0], HeaderSize)
		if _, err := io.ReadFull(r, c.buf); err != nil {
			return fmt.Errorf("segment: clean %s at %d: %w", s.path, pos, err)
		}
		h, err := ParseHeader(c.buf)
		if err != nil {
			return err
		}
		c.buf = growLen(c.buf, h.Size()-HeaderSize)
		if _, err := io.ReadFull(r, c.buf[HeaderSize:]); err != nil {
			return fmt.Errorf("segment: clean %s at %d: %w", s.path, pos, err)
		}
		pos += int64(h.Size())
		c.read += int64(h.Size())
		c.o.Throttle(int64(h.Size()))
		if err := fn(&h, c.buf); err != nil {
			return err
		}
	}
	return nil
}

// aborted reports a batch of an aborted transaction.
func (c *cleaner) aborted(h *Header) bool {
	if !h.IsTransactional() || h.IsControl() {
		return false
	}
	for _, a := range c.o.Aborted {
		if a.ProducerID == h.ProducerID && a.First <= h.BaseOffset && h.BaseOffset <= a.Last {
			return true
		}
	}
	return false
}

// mapBatch puts the batch's keys into the offset map.
func (c *cleaner) mapBatch(h *Header, b []byte) error {
	if h.IsControl() || c.aborted(h) || h.RecordCount == 0 {
		return nil
	}
	recs, err := c.records(h, b)
	if err != nil {
		return err
	}
	return walkRecords(recs, int(h.RecordCount), func(_ []byte, delta int64, key []byte, _ bool) {
		if key != nil {
			c.keys.put(key, h.BaseOffset+delta)
		}
	})
}

// records returns the batch's records section, decompressed.
func (c *cleaner) records(h *Header, b []byte) ([]byte, error) {
	codec := int8(h.Attributes & batch.AttrCompression)
	if codec == batch.CodecNone {
		return b[HeaderSize:], nil
	}
	out, err := batch.Decompress(c.plain[:0], codec, b[HeaderSize:])
	c.plain = out[:0]
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return out, nil
}

// rewrite writes the cleaned copy of s to tmp; changed is false (and tmp is to be
// removed) when every batch stays as it was.
func (c *cleaner) rewrite(s *segment, tmp string) (changed bool, written int64, err error) {
	// The copy is started at the first batch that changes, with the unchanged bytes before it: a
	// segment with nothing to drop costs a read, not a write.
	var f *os.File
	var w *bufio.Writer
	defer func() {
		if f != nil {
			if e := f.Close(); err == nil {
				err = e
			}
		}
	}()
	pos := int64(0)
	err = c.scan(s, func(h *Header, b []byte) error {
		start := pos
		pos += int64(h.Size())
		out, same, err := c.cleanBatch(h, b)
		if err != nil {
			return err
		}
		if !same && f == nil {
			if f, err = os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644); err != nil {
				return err
			}
			w = bufio.NewWriterSize(f, 256<<10)
			n, err := io.Copy(w, io.NewSectionReader(s.data, 0, start))
			written += n
			c.o.Throttle(2 * n) // read and written
			if err != nil {
				return err
			}
		}
		if f != nil && out != nil {
			if _, err := w.Write(out); err != nil {
				return err
			}
			written += int64(len(out))
			c.o.Throttle(int64(len(out)))
		}
		return nil
	})
	if err != nil || f == nil {
		return false, written, err
	}
	if err := w.Flush(); err != nil {
		return false, written, err
	}
	return true, written, datasync(f)
}

// cleanBatch returns what becomes of one batch: itself (same), a rewritten copy, or nil (dropped).
func (c *cleaner) cleanBatch(h *Header, b []byte) (out []byte, same bool, err error) {
	switch {
	case h.IsControl():
		hadData := c.txnData[h.ProducerID]
		delete(c.txnData, h.ProducerID)
		if !hadData && c.dropDeletes {
			return nil, false, nil
		}
		return b, true, nil
	case c.aborted(h):
		return nil, false, nil
	case h.RecordCount == 0:
		return b, true, nil
	}
	recs, err := c.records(h, b)
	if err != nil {
		return nil, false, err
	}
	c.kept = c.kept[:0]
	n := 0
	err = walkRecords(recs, int(h.RecordCount), func(rec []byte, delta int64, key []byte, nullValue bool) {
		if key == nil {
			return // a compacted log keeps records by key; one without is dropped, as Kafka does
		}
		latest, ok := c.keys.get(key)
		if ok && h.BaseOffset+delta < latest || nullValue && c.dropDeletes {
			return
		}
		c.kept = append(c.kept, rec...)
		n++
	})
	if err != nil {
		return nil, false, err
	}
	if n > 0 && h.IsTransactional() {
		c.txnData[h.ProducerID] = true
	}
	switch n {
	case int(h.RecordCount):
		return b, true, nil
	case 0:
		return nil, false, nil
	}
	codec := int8(h.Attributes & batch.AttrCompression)
	c.out = append(c.out[:0], b[:HeaderSize]...)
	if c.out, err = batch.Compress(c.out, codec, c.kept); err != nil {
		return nil, false, err
	}
	binary.BigEndian.PutUint32(c.out[batch.PosRecordCount:], uint32(n))
	binary.BigEndian.PutUint32(c.out[batch.PosLength:], uint32(len(c.out)-batch.LengthPrefix))
	batch.PutCRC(c.out)
	return c.out, false, nil
}

// walkRecords calls fn for each of the n records in recs with the record's whole encoding (length
// prefix included), its offset delta, key (nil when null) and whether its value is null.
func walkRecords(recs []byte, n int, fn func(rec []byte, delta int64, key []byte, nullValue bool)) error {
	for range n {
		l, k := binary.Varint(recs)
		if k <= 0 || l < 1 || l > int64(len(recs)-k) {
			return fmt.Errorf("%w: record length", ErrCorrupt)
		}
		whole := recs[:k+int(l)]
		body := recs[k+1 : k+int(l)] // after the attributes
		recs = recs[k+int(l):]
		_, m1 := binary.Varint(body) // timestamp delta
		if m1 <= 0 {
			return fmt.Errorf("%w: record timestamp", ErrCorrupt)
		}
		delta, m2 := binary.Varint(body[m1:])
		if m2 <= 0 {
			return fmt.Errorf("%w: record offset delta", ErrCorrupt)
		}
		body = body[m1+m2:]
		kl, m := binary.Varint(body)
		if m <= 0 || kl < -1 || kl > int64(len(body)-m) {
			return fmt.Errorf("%w: record key", ErrCorrupt)
		}
		body = body[m:]
		var key []byte
		if kl >= 0 {
			key, body = body[:kl], body[kl:]
		}
		vl, m := binary.Varint(body)
		if m <= 0 || vl < -1 {
			return fmt.Errorf("%w: record value", ErrCorrupt)
		}
		fn(whole, delta, key, vl < 0)
	}
	return nil
}

// offsetMap is the cleaner's key -> latest offset map. Keys are kept as 128-bit hashes (Kafka keeps
// 128-bit MD5s) so memory is bounded by the number of keys, not their size; two keys colliding in
// 128 bits is not a practical concern.
type offsetMap struct {
	m      map[[16]byte]int64
	s1, s2 maphash.Seed
}

func newOffsetMap() *offsetMap {
	return &offsetMap{m: map[[16]byte]int64{}, s1: maphash.MakeSeed(), s2: maphash.MakeSeed()}
}

func (om *offsetMap) hash(key []byte) [16]byte {
	var h [16]byte
	binary.LittleEndian.PutUint64(h[:], maphash.Bytes(om.s1, key))
	binary.LittleEndian.PutUint64(h[8:], maphash.Bytes(om.s2, key))
	return h
}

func (om *offsetMap) put(key []byte, offset int64) { om.m[om.hash(key)] = offset }

func (om *offsetMap) get(key []byte) (int64, bool) {
	o, ok := om.m[om.hash(key)]
	return o, ok
}
