package segment

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"os"
)

// The index files of a segment, as in Kafka: NNN.index holds (relative offset u32, position u32)
// and NNN.timeindex (timestamp i64, relative offset u32), one entry each per index point, both
// big-endian. The in-memory entries are the truth while the log runs; the files are written
// for the next Open.
//
// An index on disk is trusted only when NNN.indexsum vouches for it: entry count and the CRC-32C
// of each file. The sum is written only after the data its entries point at is durable (by Sync,
// after the data's fdatasync), so a trusted entry never points at bytes a crash may have lost;
// anything else (torn, stale, damaged, missing) fails the check and the segment's index is rebuilt
// by scanning its data. A sealed segment's index files and sum are fsynced once, at the first
// Sync after the roll; the active segment's are rewritten (not fsynced) at every Sync.
const (
	sumSuffix = ".indexsum"
	sumMagic  = "SLIX"
	sumSize   = 4 + 4 + 4 + 4 // magic | entry count u32 | crc of .index u32 | crc of .timeindex u32
)

func encodeEntries(entries []indexEntry) (ob, tb []byte) {
	ob = make([]byte, len(entries)*offsetEntrySize)
	tb = make([]byte, len(entries)*timeEntrySize)
	for i, e := range entries {
		binary.BigEndian.PutUint32(ob[i*offsetEntrySize:], e.rel)
		binary.BigEndian.PutUint32(ob[i*offsetEntrySize+4:], e.pos)
		binary.BigEndian.PutUint64(tb[i*timeEntrySize:], uint64(e.tsBefore))
		binary.BigEndian.PutUint32(tb[i*timeEntrySize+8:], e.rel)
	}
	return ob, tb
}

func entriesCRC(entries []indexEntry) (uint32, uint32) {
	ob, tb := encodeEntries(entries)
	return crc32.Checksum(ob, castagnoli), crc32.Checksum(tb, castagnoli)
}

// loadIndex returns the index entries if the sum vouches for the index files and they make sense
// (strictly increasing offsets and positions inside the data, non-decreasing timestamps, both
// files agreeing); otherwise nil, and the segment is rebuilt from its data.
func loadIndex(stem string, dataSize int64) []indexEntry {
	sum, err := os.ReadFile(stem + sumSuffix)
	if err != nil || len(sum) != sumSize || string(sum[:4]) != sumMagic {
		return nil
	}
	ob, err1 := os.ReadFile(stem + indexSuffix)
	tb, err2 := os.ReadFile(stem + timeIndexSuffix)
	n := int(binary.BigEndian.Uint32(sum[4:]))
	if err1 != nil || err2 != nil || n > maxIndexEntries ||
		len(ob) != n*offsetEntrySize || len(tb) != n*timeEntrySize ||
		binary.BigEndian.Uint32(sum[8:]) != crc32.Checksum(ob, castagnoli) ||
		binary.BigEndian.Uint32(sum[12:]) != crc32.Checksum(tb, castagnoli) {
		return nil
	}
	entries := make([]indexEntry, 0, n)
	var prev indexEntry
	for i := range n {
		e := indexEntry{
			rel:      binary.BigEndian.Uint32(ob[i*offsetEntrySize:]),
			pos:      binary.BigEndian.Uint32(ob[i*offsetEntrySize+4:]),
			tsBefore: int64(binary.BigEndian.Uint64(tb[i*timeEntrySize:])),
		}
		if binary.BigEndian.Uint32(tb[i*timeEntrySize+8:]) != e.rel ||
			e.rel <= prev.rel || e.pos <= prev.pos || int64(e.pos) >= dataSize ||
			e.rel > math.MaxInt32 || (i > 0 && e.tsBefore < prev.tsBefore) {
			return nil
		}
		entries = append(entries, e)
		prev = e
	}
	return entries
}

// openIndexes opens (creating) the index files that are not open.
func (s *segment) openIndexes() error {
	for _, f := range []struct {
		file   **os.File
		suffix string
	}{{&s.index, indexSuffix}, {&s.timeIndex, timeIndexSuffix}, {&s.sum, sumSuffix}} {
		if *f.file != nil {
			continue
		}
		file, err := os.OpenFile(s.stem()+f.suffix, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			s.closeIndexes()
			return err
		}
		*f.file = file
	}
	return nil
}

// closeIndexes closes the index files; they reopen on demand.
func (s *segment) closeIndexes() {
	for _, f := range []**os.File{&s.index, &s.timeIndex, &s.sum} {
		if *f != nil {
			(*f).Close()
			*f = nil
		}
	}
}

// flushIndex writes entries [flushed, n) to the index files. Entries are never rewritten in
// place: the files only grow, or are cut by truncateIndexFiles.
func (s *segment) flushIndex(n int) error {
	if n <= s.flushed {
		return nil
	}
	if err := s.openIndexes(); err != nil {
		return err
	}
	// Index points are rare (one per IndexIntervalBytes): these buffers are not a hot path.
	ob, tb := encodeEntries(s.entries[s.flushed:n])
	if _, err := s.index.WriteAt(ob, int64(s.flushed*offsetEntrySize)); err != nil {
		return err
	}
	if _, err := s.timeIndex.WriteAt(tb, int64(s.flushed*timeEntrySize)); err != nil {
		return err
	}
	s.crcIndex = crc32.Update(s.crcIndex, castagnoli, ob)
	s.crcTime = crc32.Update(s.crcTime, castagnoli, tb)
	s.flushed = n
	return nil
}

// writeSum vouches for the flushed entries. Only call it once the data they point at is durable.
func (s *segment) writeSum() error {
	if err := s.openIndexes(); err != nil {
		return err
	}
	var b [sumSize]byte
	copy(b[:], sumMagic)
	binary.BigEndian.PutUint32(b[4:], uint32(s.flushed))
	binary.BigEndian.PutUint32(b[8:], s.crcIndex)
	binary.BigEndian.PutUint32(b[12:], s.crcTime)
	_, err := s.sum.WriteAt(b[:], 0)
	return err
}

// dropSum withdraws the sum, so the index files can change without a stale sum vouching for them.
func (s *segment) dropSum() error {
	if s.sum != nil {
		s.sum.Close()
		s.sum = nil
	}
	if err := os.Remove(s.stem() + sumSuffix); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// truncateIndexFiles cuts both index files to their first n entries.
func (s *segment) truncateIndexFiles(n int) error {
	if err := s.openIndexes(); err != nil {
		return err
	}
	if err := s.index.Truncate(int64(n * offsetEntrySize)); err != nil {
		return err
	}
	if err := s.timeIndex.Truncate(int64(n * timeEntrySize)); err != nil {
		return err
	}
	s.flushed = min(s.flushed, n)
	s.crcIndex, s.crcTime = entriesCRC(s.entries[:s.flushed])
	return nil
}

// syncIndexes makes the index files durable.
func (s *segment) syncIndexes() error {
	for _, f := range []*os.File{s.index, s.timeIndex, s.sum} {
		if f != nil {
			if err := datasync(f); err != nil {
				return err
			}
		}
	}
	return nil
}

// sealedIndexStride thins a sealed segment's in-memory index to every 16th entry once its index
// files are final: 1 byte of memory per KiB of data instead of 4 (Kafka keeps its indexes in
// page-cache-backed mmaps instead). Lookups stay correct with any subset of the entries; they
// scan batch headers from the nearest kept one, 16 index intervals at most.
const sealedIndexStride = 16

// thin replaces a sealed segment's in-memory index with every sealedIndexStride-th entry.
// Caller holds writeMu.
func (l *Log) thin(s *segment) {
	if s.thinned || len(s.entries) < 2*sealedIndexStride {
		return
	}
	kept := make([]indexEntry, 0, len(s.entries)/sealedIndexStride)
	for i := sealedIndexStride - 1; i < len(s.entries); i += sealedIndexStride {
		kept = append(kept, s.entries[i])
	}
	l.mu.Lock()
	s.entries = kept
	l.mu.Unlock()
	s.thinned = true
}

// scanEntries rebuilds a segment's full index from its data (which is intact: it was checked
// when written or recovered). Caller holds writeMu.
func scanEntries(s *segment, interval, gapsBelow int64) ([]indexEntry, error) {
	sc := newScanner()
	sc.reset(s.data, s.end)
	var entries []indexEntry
	pos, next, since, maxTs := int64(0), s.base, int64(0), int64(math.MinInt64)
	for pos < s.end {
		h, err := sc.batchAt(pos, next, gapsBelow)
		if err != nil {
			return nil, err
		}
		next = h.BaseOffset
		if since >= interval && pos > 0 {
			entries = append(entries, indexEntry{rel: uint32(next - s.base), pos: uint32(pos), tsBefore: maxTs})
			since = 0
		}
		pos += int64(h.Size())
		since += int64(h.Size())
		next = h.NextOffset()
		maxTs = max(maxTs, h.MaxTimestamp)
	}
	return entries, nil
}
