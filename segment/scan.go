package segment

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
)

// scanBufSize is the read-ahead of the recovery scanner; batches larger than this are checked in
// pieces, so a garbage length field never makes recovery allocate.
const scanBufSize = 1 << 20

// scanner reads a segment file sequentially through one buffer and checks batches in place.
type scanner struct {
	f      *os.File
	size   int64 // bytes in the file
	buf    []byte
	bufPos int64 // file position of buf[0]
	bufLen int
}

func newScanner() *scanner { return &scanner{buf: make([]byte, scanBufSize)} }

func (sc *scanner) reset(f *os.File, size int64) {
	sc.f, sc.size, sc.bufPos, sc.bufLen = f, size, 0, 0
}

// at returns n (<= len(buf)) bytes at pos, or io.ErrUnexpectedEOF past the end of the file.
func (sc *scanner) at(pos int64, n int) ([]byte, error) {
	if pos < 0 || pos+int64(n) > sc.size {
		return nil, io.ErrUnexpectedEOF
	}
	if pos >= sc.bufPos && pos+int64(n) <= sc.bufPos+int64(sc.bufLen) {
		off := int(pos - sc.bufPos)
		return sc.buf[off : off+n], nil
	}
	want := int64(len(sc.buf))
	if rest := sc.size - pos; rest < want {
		want = rest
	}
	got, err := sc.f.ReadAt(sc.buf[:want], pos)
	sc.bufPos, sc.bufLen = pos, got
	if got < n {
		if err == nil || errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return sc.buf[:n], nil
}

// batchAt checks the batch at pos: whole within the file, base offset as expected, header sane and
// CRC-32C intact. A read error is returned as is; any defect in the bytes wraps ErrCorrupt,
// ErrBadMagic or ErrTruncated. A batch below gapsBelow may start above wantBase: the log cleaner
// removes whole batches from sealed segments below that offset, leaving gaps (as Kafka's does).
// Anywhere else a well-formed batch with another base offset is stale or foreign bytes.
func (sc *scanner) batchAt(pos, wantBase, gapsBelow int64) (Header, error) {
	b, err := sc.at(pos, HeaderSize)
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return Header{}, ErrTruncated
		}
		return Header{}, err
	}
	h, err := ParseHeader(b)
	if err != nil {
		return h, err
	}
	if h.BaseOffset != wantBase && !(h.BaseOffset > wantBase && h.BaseOffset < gapsBelow) {
		return h, fmt.Errorf("%w: base offset %d at position %d, expected %d", ErrCorrupt, h.BaseOffset, pos, wantBase)
	}
	end := pos + int64(h.Size())
	if end > sc.size {
		return h, ErrTruncated
	}
	if err := checkCounts(h, true); err != nil {
		return h, err
	}
	var crc uint32
	for p := pos + offAttributes; p < end; {
		n := int64(len(sc.buf))
		if end-p < n {
			n = end - p
		}
		b, err := sc.at(p, int(n))
		if err != nil {
			return h, err
		}
		crc = crc32.Update(crc, castagnoli, b)
		p += n
	}
	if crc != h.CRC {
		return h, fmt.Errorf("%w: crc at position %d", ErrCorrupt, pos)
	}
	return h, nil
}
