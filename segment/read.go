package segment

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"sync"
)

// FileRange is a run of whole batches in a segment file, for sendfile(out, File.Fd(), &Pos, Len).
// Never use the file's shared offset (Read/Seek, TCPConn.ReadFrom): ranges are shared.
type FileRange struct {
	File *os.File
	Pos  int64
	Len  int64
}

// ReadResult holds the answer of Log.Read: file ranges of whole batches, in offset order. The
// files stay open until Release, even if retention deletes the segments meanwhile.
type ReadResult struct {
	Ranges []FileRange
	Size   int64 // sum of the ranges' Len
	// NextOffset follows the last batch in the ranges (the fetch offset after them); with Size 0
	// it is meaningless.
	NextOffset int64

	segs      []*segment // one reference each
	rangesArr [2]FileRange
	segsArr   [2]*segment
}

var resultPool = sync.Pool{New: func() any { return new(ReadResult) }}

func newResult() *ReadResult {
	r := resultPool.Get().(*ReadResult)
	r.Ranges, r.segs = r.rangesArr[:0], r.segsArr[:0]
	return r
}

// Release gives the files back. Call it exactly once, when the bytes have been sent; the result
// must not be used afterwards.
func (r *ReadResult) Release() {
	if r.Ranges == nil {
		return // released already (a second Release is a caller bug; this catches the common case)
	}
	for _, s := range r.segs {
		s.release()
	}
	clear(r.rangesArr[:])
	clear(r.segsArr[:])
	r.Ranges, r.segs, r.Size, r.NextOffset = nil, nil, 0, 0
	resultPool.Put(r)
}

// WriteTo copies the ranges to w, reading with pread (the files' shared offsets are untouched).
func (r *ReadResult) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for _, rg := range r.Ranges {
		n, err := io.Copy(w, io.NewSectionReader(rg.File, rg.Pos, rg.Len))
		total += n
		if err != nil {
			return total, err
		}
		if n != rg.Len {
			return total, io.ErrUnexpectedEOF
		}
	}
	return total, nil
}

// AppendTo appends the ranges' bytes to dst.
func (r *ReadResult) AppendTo(dst []byte) ([]byte, error) {
	n := len(dst)
	dst = growLen(dst, int(r.Size))
	for _, rg := range r.Ranges {
		if _, err := rg.File.ReadAt(dst[n:n+int(rg.Len)], rg.Pos); err != nil {
			return dst[:n], err
		}
		n += int(rg.Len)
	}
	return dst, nil
}

func growLen(b []byte, n int) []byte {
	if cap(b)-len(b) < n {
		nb := make([]byte, len(b), len(b)+n)
		copy(nb, b)
		b = nb
	}
	return b[:len(b)+n]
}

func (r *ReadResult) add(s *segment, pos, n int64) {
	if k := len(r.Ranges); k > 0 && r.segs[k-1] == s && r.Ranges[k-1].Pos+r.Ranges[k-1].Len == pos {
		r.Ranges[k-1].Len += n
	} else {
		r.Ranges = append(r.Ranges, FileRange{File: s.data, Pos: pos, Len: n})
		r.segs = append(r.segs, s)
		s.acquire()
	}
	r.Size += n
}

// segView is what a reader needs of a segment, taken under Log.mu.
type segView struct {
	s       *segment
	end     int64
	next    int64
	maxTs   int64
	entries []indexEntry
}

// viewAt returns the segment holding offset with one reference taken, false for
// offset == NextOffset, and ErrOffsetOutOfRange outside [StartOffset, NextOffset].
func (l *Log) viewAt(offset int64) (segView, bool, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.shut {
		return segView{}, false, ErrClosed
	}
	start, next := l.segs[0].base, l.active.next
	if offset < start || offset > next {
		return segView{}, false, fmt.Errorf("%w: offset %d, log holds [%d, %d)", ErrOffsetOutOfRange, offset, start, next)
	}
	if offset == next {
		return segView{}, false, nil
	}
	s := l.segs[sort.Search(len(l.segs), func(i int) bool { return l.segs[i].base > offset })-1]
	s.acquire()
	return segView{s: s, end: s.end, next: s.next, maxTs: s.maxTs, entries: s.entries}, true, nil
}

// Read returns the whole batches from the one containing offset onward, at most maxBytes in
// total, but always at least that first batch (so a consumer makes progress whatever its limit).
// offset == NextOffset() gives an empty result. Release the result when done.
func (l *Log) Read(offset int64, maxBytes int) (*ReadResult, error) {
	return l.ReadBelow(offset, maxBytes, math.MaxInt64)
}

// ReadBelow is Read that stops before the batch at offset end, a batch boundary such as the high
// watermark: Read follows appends made while it runs, and a reader bounded by a watermark it looked
// at earlier must not be handed batches past it. offset >= end gives an empty result.
func (l *Log) ReadBelow(offset int64, maxBytes int, end int64) (*ReadResult, error) {
	v, ok, err := l.viewAt(offset)
	if err != nil {
		return nil, err
	}
	r := newResult()
	if !ok {
		return r, nil
	}
	if offset >= end {
		v.s.release()
		return r, nil
	}
	if v, err = clipView(v, end); err != nil {
		v.s.release()
		r.Release()
		return nil, err
	}
	pos, first, firstNext, err := findBatch(v, offset)
	for errors.Is(err, errInEndGap) {
		// Go on from the next segment's start (its base is where this one's offsets end).
		prev := v
		prev.s.release()
		if v, pos, ok = l.viewAfter(prev); !ok || prev.next >= end {
			return r, nil
		}
		if v, err = clipView(v, end); err == nil {
			pos, first, firstNext, err = findBatch(v, v.s.base)
		}
	}
	if err != nil {
		v.s.release()
		r.Release()
		return nil, err
	}
	// The first batch goes in whatever its size.
	r.add(v.s, pos, first)
	r.NextOffset = firstNext
	budget := int64(maxBytes) - first
	pos += first
	var hb [HeaderSize]byte
	for budget > 0 {
		if pos < v.end {
			endPos, endNext, err := lastBoundary(v, pos, r.NextOffset, budget, &hb)
			if err != nil {
				v.s.release()
				r.Release()
				return nil, err
			}
			if endPos > pos {
				r.add(v.s, pos, endPos-pos)
				r.NextOffset = endNext
				budget -= endPos - pos
			}
			if endPos < v.end {
				break // the next batch does not fit
			}
		}
		prev := v
		prev.s.release()
		if prev.next >= end {
			return r, nil
		}
		if v, pos, ok = l.viewAfter(prev); !ok {
			return r, nil
		}
		if v, err = clipView(v, end); err != nil {
			v.s.release()
			r.Release()
			return nil, err
		}
	}
	v.s.release()
	return r, nil
}

// clipView cuts v at the batch starting at offset end when v reaches past it.
func clipView(v segView, end int64) (segView, error) {
	if v.next <= end {
		return v, nil
	}
	pos, _, _, err := findBatch(v, end)
	if err != nil {
		return v, err
	}
	v.end, v.next = pos, end
	return v, nil
}

// viewAfter returns what follows prev's end, from position pos: the next segment, or more of the
// same segment if it was the active one and took appends since prev was taken.
func (l *Log) viewAfter(prev segView) (v segView, pos int64, ok bool) {
	v, ok, err := l.viewAt(prev.next)
	if err != nil || !ok {
		return segView{}, 0, false
	}
	if v.s == prev.s {
		pos = prev.end
	}
	return v, pos, true
}

// findBatch returns the position and size of the batch holding offset in v (or, when the cleaner
// removed offset, of the first batch after it), and the offset after it: from the index point at
// or before it, header by header.
func findBatch(v segView, offset int64) (pos, size, next int64, err error) {
	var hb [HeaderSize]byte
	pos, off := indexFor(v.entries, v.s.base, offset)
	for pos < v.end {
		h, err := readHeader(v.s.data, pos, &hb)
		if err != nil {
			return 0, 0, 0, err
		}
		// Base offsets only grow; above the expected one is a gap the cleaner left, and a
		// removed offset is served from the batch after it.
		if h.BaseOffset < off {
			return 0, 0, 0, fmt.Errorf("%w: batch at %d of %s has base %d, expected %d", ErrCorrupt, pos, v.s.path, h.BaseOffset, off)
		}
		if h.NextOffset() > offset {
			return pos, int64(h.Size()), h.NextOffset(), nil
		}
		pos += int64(h.Size())
		off = h.NextOffset()
	}
	if pos == v.end && offset < v.next {
		return 0, 0, 0, errInEndGap
	}
	return 0, 0, 0, fmt.Errorf("%w: offset %d not found in %s", ErrCorrupt, offset, v.s.path)
}

// errInEndGap: the offset is in a gap the cleaner left at the end of a segment; the records go on in
// the next segment.
var errInEndGap = errors.New("segment: offset in a gap at the end of a segment")

// lastBoundary returns the furthest batch boundary in v at or below pos+budget (pos is a
// boundary, the batch there starting at offset off) and the offset of the batch starting there:
// an index point near the limit, then header by header.
func lastBoundary(v segView, pos, off, budget int64, hb *[HeaderSize]byte) (int64, int64, error) {
	limit := pos + budget
	if limit >= v.end {
		return v.end, v.next, nil
	}
	i := sort.Search(len(v.entries), func(i int) bool { return int64(v.entries[i].pos) > limit })
	if i > 0 && int64(v.entries[i-1].pos) > pos {
		pos, off = int64(v.entries[i-1].pos), v.s.base+int64(v.entries[i-1].rel)
	}
	for pos < v.end {
		h, err := readHeader(v.s.data, pos, hb)
		if err != nil {
			return 0, 0, err
		}
		if pos+int64(h.Size()) > limit {
			break
		}
		pos += int64(h.Size())
		off = h.NextOffset()
	}
	return pos, off, nil
}

// OffsetForTimestamp returns the base offset of the first batch whose MaxTimestamp >= ts (Kafka's
// ListOffsets by time), found through the time index; found is false when no batch is that new.
func (l *Log) OffsetForTimestamp(ts int64) (offset int64, found bool, err error) {
	l.mu.RLock()
	var v segView
	if l.shut {
		l.mu.RUnlock()
		return 0, false, ErrClosed
	}
	for _, s := range l.segs {
		if s.end > 0 && s.maxTs >= ts {
			s.acquire()
			v = segView{s: s, end: s.end, next: s.next, maxTs: s.maxTs, entries: s.entries}
			break
		}
	}
	l.mu.RUnlock()
	if v.s == nil {
		return 0, false, nil
	}
	defer v.s.release()

	// Entries' tsBefore never decrease. Before the first entry with tsBefore >= ts some batch
	// reaches ts; every batch before the entry ahead of it is older than ts.
	j := sort.Search(len(v.entries), func(i int) bool { return v.entries[i].tsBefore >= ts })
	pos, off := int64(0), v.s.base
	if j > 0 {
		pos, off = int64(v.entries[j-1].pos), v.s.base+int64(v.entries[j-1].rel)
	}
	var hb [HeaderSize]byte
	for pos < v.end {
		h, err := readHeader(v.s.data, pos, &hb)
		if err != nil {
			return 0, false, err
		}
		if h.MaxTimestamp >= ts {
			return max(off, h.BaseOffset), true, nil
		}
		pos += int64(h.Size())
		off = h.NextOffset()
	}
	// Unreachable while maxTs is right; say so rather than guess.
	return 0, false, fmt.Errorf("%w: max timestamp of %s not found", ErrCorrupt, v.s.path)
}
