package segment

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"math"
	"os"
)

// An index is trusted on open only when its .indexsum file vouches for it: entry count and
// CRC-32C of both index files, written when the segment is sealed (roll, Close, recovery). A
// crash leaves the active segment without one (or with a stale one), so its index is rebuilt by
// scanning the whole segment, as Kafka does past its recovery point; damaged index files of
// sealed segments are caught the same way instead of silently misdirecting reads.
const (
	sumSuffix = ".indexsum"
	sumMagic  = "SLIX"
	sumSize   = 4 + 4 + 4 // magic | entry count u32 | crc u32
)

func indexSum(ob, tb []byte) uint32 {
	return crc32.Update(crc32.Checksum(ob, castagnoli), castagnoli, tb)
}

// writeIndexSum records the checksum of the index files as they are now (after flushIndex).
func (s *segment) writeIndexSum() error {
	ob, tb := encodeEntries(s.entries)
	var b [sumSize]byte
	copy(b[:], sumMagic)
	binary.BigEndian.PutUint32(b[4:], uint32(len(s.entries)))
	binary.BigEndian.PutUint32(b[8:], indexSum(ob, tb))
	return os.WriteFile(s.stem()+sumSuffix, b[:], 0o644)
}

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

// loadIndex returns the index entries if the index files are vouched for by their checksum and
// make sense (strictly increasing offsets and positions inside the data, non-decreasing
// timestamps, both files agreeing), else nil: the segment is then rebuilt from its data.
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
		binary.BigEndian.Uint32(sum[8:]) != indexSum(ob, tb) {
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

// recoverSegment opens the segment file at path and finds its intact prefix: it starts at the
// last entry of a trusted index that points at an intact batch (else at the start), checks every
// batch from there by CRC and stops at the first one that is torn, garbage or zeros. The index
// is extended over the scanned part, and its files are rewritten when they were not trusted
// (the checksum file is left to the caller: seal).
// The data file is not shortened here.
func recoverSegment(path string, base int64, interval int64, sc *scanner) (*segment, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	s := &segment{base: base, path: path, data: f, next: base, maxTs: math.MinInt64}
	s.refs.Store(1)
	sc.reset(f, st.Size())

	fileEntries := loadIndex(s.stem(), st.Size())
	entries := fileEntries
	pos := int64(0)
	for len(entries) > 0 {
		e := entries[len(entries)-1]
		if _, err := sc.batchAt(int64(e.pos), base+int64(e.rel)); err == nil {
			pos, s.next, s.maxTs = int64(e.pos), base+int64(e.rel), e.tsBefore
			break
		} else if !isBadData(err) {
			f.Close()
			return nil, err
		}
		entries = entries[:len(entries)-1]
	}
	trusted := len(entries)
	s.entries = entries

	// Scan from the trusted point. Its own batch already has its entry, and sinceIndex starts at
	// zero, so addIndexPoint adds none for it.
	for {
		h, err := sc.batchAt(pos, s.next)
		if err != nil {
			if !isBadData(err) {
				f.Close()
				return nil, err
			}
			break
		}
		s.end = pos
		s.addIndexPoint(interval)
		size := int64(h.Size())
		pos += size
		s.sinceIndex += size
		s.next = h.NextOffset()
		s.maxTs = max(s.maxTs, h.MaxTimestamp)
	}
	s.end = pos

	// Bring the index files in line: keep the trusted part, write the rebuilt tail.
	s.flushed = trusted
	if trusted != len(fileEntries) || len(s.entries) != trusted || fileEntries == nil {
		if err := s.truncateIndexFiles(trusted); err != nil {
			s.release()
			return nil, err
		}
		if err := s.flushIndex(); err != nil {
			s.release()
			return nil, err
		}
		// Not synced: a lost rewrite only means another rebuild at the next Open.
		s.sumStale = true
	}
	return s, nil
}

// isBadData tells a defect in the bytes (which recovery cuts off) from an I/O failure (which it
// must not paper over).
func isBadData(err error) bool {
	return errors.Is(err, ErrCorrupt) || errors.Is(err, ErrBadMagic) || errors.Is(err, ErrTruncated) ||
		errors.Is(err, io.ErrUnexpectedEOF)
}
