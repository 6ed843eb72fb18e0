package segment

import (
	"errors"
	"io"
	"math"
	"os"
)

// recoverSegment opens the segment file at path and finds its intact prefix: it starts at the
// last entry of a trusted index that points at an intact batch (else at the start), checks every
// batch from there by CRC and stops at the first one that is torn, garbage or zeros. The index
// is extended over the scanned part; rebuilt reports that the index files need rewriting.
// The data file is not shortened here.
func recoverSegment(path string, base, interval, gapsBelow int64, sc *scanner) (s *segment, rebuilt bool, err error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, false, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, false, err
	}
	s = &segment{base: base, path: path, data: f, next: base, maxTs: math.MinInt64}
	s.refs.Store(1)
	sc.reset(f, st.Size())

	fileEntries := loadIndex(s.stem(), st.Size())
	entries := fileEntries
	pos := int64(0)
	for len(entries) > 0 {
		e := entries[len(entries)-1]
		if _, err := sc.batchAt(int64(e.pos), base+int64(e.rel), 0); err == nil {
			pos, s.next, s.maxTs = int64(e.pos), base+int64(e.rel), e.tsBefore
			break
		} else if !isBadData(err) {
			f.Close()
			return nil, false, err
		}
		entries = entries[:len(entries)-1]
	}
	trusted := len(entries)
	s.entries = entries

	// Scan from the trusted point. Its own batch already has its entry, and sinceIndex starts at
	// zero, so addIndexPoint adds none for it.
	for {
		h, err := sc.batchAt(pos, s.next, gapsBelow)
		if err != nil {
			if !isBadData(err) {
				f.Close()
				return nil, false, err
			}
			break
		}
		s.end = pos
		s.next = h.BaseOffset // past a gap the cleaner left, the index point names this batch
		s.addIndexPoint(interval)
		size := int64(h.Size())
		pos += size
		s.sinceIndex += size
		s.next = h.NextOffset()
		s.maxTs = max(s.maxTs, h.MaxTimestamp)
	}
	s.end = pos

	// The trusted part matches the files; a rebuilt tail is written, and vouched for, by the
	// next Sync, after the data it points to is durable (the caller marks s dirty).
	s.flushed = trusted
	s.crcIndex, s.crcTime = entriesCRC(entries)
	if trusted == len(fileEntries) && fileEntries != nil && len(s.entries) == trusted {
		return s, false, nil
	}
	return s, true, nil
}

// isBadData tells a defect in the bytes (which recovery cuts off) from an I/O failure (which it
// must not paper over).
func isBadData(err error) bool {
	return errors.Is(err, ErrCorrupt) || errors.Is(err, ErrBadMagic) || errors.Is(err, ErrTruncated) ||
		errors.Is(err, io.ErrUnexpectedEOF)
}
