package segment

import (
	"encoding/binary"
	"errors"
	"io"
	"math"
	"os"
)

// loadIndex reads the index files and keeps their longest self-consistent prefix: strictly
// increasing offsets and positions inside the data, non-decreasing timestamps, both files
// agreeing. A missing or damaged file yields fewer (or no) entries, never an error.
func loadIndex(stem string, dataSize int64) []indexEntry {
	ob, _ := os.ReadFile(stem + indexSuffix)
	tb, _ := os.ReadFile(stem + timeIndexSuffix)
	n := min(len(ob)/offsetEntrySize, len(tb)/timeEntrySize, maxIndexEntries)
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
			break
		}
		entries = append(entries, e)
		prev = e
	}
	return entries
}

// recoverSegment opens the segment file at path and finds its intact prefix: it trusts the index
// up to its last entry that points at an intact batch, then checks every batch after it by CRC
// and stops at the first one that is torn, garbage or zeros. The index is extended over the
// scanned part and its files are rewritten where they disagreed. The file is not shortened here.
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

	// Bring the index files in line: cut what was wrong, then write the rebuilt tail.
	s.flushed = trusted
	if trusted != len(fileEntries) || len(s.entries) != trusted || indexFileEntries(s.stem()) != trusted {
		if err := s.truncateIndexFiles(trusted); err != nil {
			s.release()
			return nil, err
		}
		if err := s.flushIndex(); err != nil {
			s.release()
			return nil, err
		}
		if err := s.syncFiles(); err != nil {
			s.release()
			return nil, err
		}
	}
	return s, nil
}

// indexFileEntries is the entry count the two index files' sizes imply, -1 if they disagree.
func indexFileEntries(stem string) int {
	oi, err1 := os.Stat(stem + indexSuffix)
	ti, err2 := os.Stat(stem + timeIndexSuffix)
	if err1 != nil || err2 != nil || oi.Size()%offsetEntrySize != 0 || ti.Size()%timeEntrySize != 0 ||
		oi.Size()/offsetEntrySize != ti.Size()/timeEntrySize {
		return -1
	}
	return int(oi.Size() / offsetEntrySize)
}

// isBadData tells a defect in the bytes (which recovery cuts off) from an I/O failure (which it
// must not paper over).
func isBadData(err error) bool {
	return errors.Is(err, ErrCorrupt) || errors.Is(err, ErrBadMagic) || errors.Is(err, ErrTruncated) ||
		errors.Is(err, io.ErrUnexpectedEOF)
}
