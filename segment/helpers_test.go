package segment

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"os"
	"testing"
)

// makeBatch builds a v2 record batch of count records with value bytes of valueSize each,
// timestamps ts, ts+1, ... (the real record encoding, so kmsg and clients can decode it).
func makeBatch(count, valueSize int, ts int64) []byte {
	b := make([]byte, HeaderSize, HeaderSize+count*(valueSize+16))
	var tmp [binary.MaxVarintLen64]byte
	for i := range count {
		var rec []byte
		rec = append(rec, 0)                                           // attributes
		rec = append(rec, tmp[:binary.PutVarint(tmp[:], int64(i))]...) // timestamp delta
		rec = append(rec, tmp[:binary.PutVarint(tmp[:], int64(i))]...) // offset delta
		rec = append(rec, tmp[:binary.PutVarint(tmp[:], -1)]...)       // null key
		rec = append(rec, tmp[:binary.PutVarint(tmp[:], int64(valueSize))]...)
		for j := range valueSize {
			rec = append(rec, byte(i+j))
		}
		rec = append(rec, 0) // no headers
		b = append(b, tmp[:binary.PutVarint(tmp[:], int64(len(rec)))]...)
		b = append(b, rec...)
	}
	be := binary.BigEndian
	be.PutUint64(b[offBaseOffset:], 0)
	be.PutUint32(b[offLength:], uint32(len(b)-lengthPrefix))
	be.PutUint32(b[offLeaderEpoch:], 0)
	b[offMagic] = 2
	be.PutUint16(b[offAttributes:], 0)
	be.PutUint32(b[offLastOffsetDelta:], uint32(count-1))
	be.PutUint64(b[offBaseTimestamp:], uint64(ts))
	be.PutUint64(b[offMaxTimestamp:], uint64(ts+int64(count)-1))
	be.PutUint64(b[offProducerID:], ^uint64(0))
	be.PutUint16(b[offProducerEpoch:], ^uint16(0))
	be.PutUint32(b[offBaseSequence:], ^uint32(0))
	be.PutUint32(b[offRecordCount:], uint32(count))
	be.PutUint32(b[offCRC:], crc32.Checksum(b[offAttributes:], castagnoli))
	return b
}

// model is what a log should hold: the batches appended, with their assigned base offsets.
type model struct {
	batches [][]byte // as written (base offset set)
	bases   []int64
	empty   int64 // next offset while batches is empty (retention or truncation emptied it)
}

// keepFrom drops the batches before the one holding offset (all of them if none does, leaving
// next at offset).
func (m *model) keepFrom(offset int64) {
	if i := m.indexOf(offset); i >= 0 {
		m.batches, m.bases = m.batches[i:], m.bases[i:]
		return
	}
	m.batches, m.bases, m.empty = nil, nil, offset
}

// keepFirst keeps the first n batches.
func (m *model) keepFirst(n int) {
	if n == 0 && len(m.batches) > 0 {
		m.empty = m.bases[0]
	}
	m.batches, m.bases = m.batches[:n], m.bases[:n]
}

func (m *model) add(b []byte, base int64) {
	m.batches = append(m.batches, append([]byte(nil), b...))
	m.bases = append(m.bases, base)
}

func (m *model) next() int64 {
	if len(m.batches) == 0 {
		return m.empty
	}
	h, _ := ParseHeader(m.batches[len(m.batches)-1])
	return h.NextOffset()
}

// indexOf is the batch holding offset.
func (m *model) indexOf(offset int64) int {
	for i, b := range m.batches {
		h, _ := ParseHeader(b)
		if offset >= h.BaseOffset && offset < h.NextOffset() {
			return i
		}
	}
	return -1
}

// expectRead is what Read(offset, maxBytes) must return: whole batches from the one holding
// offset, at least one, at most maxBytes otherwise.
func (m *model) expectRead(offset int64, maxBytes int) []byte {
	i := m.indexOf(offset)
	if i < 0 {
		return nil
	}
	out := append([]byte(nil), m.batches[i]...)
	for _, b := range m.batches[i+1:] {
		if len(out)+len(b) > maxBytes {
			break
		}
		out = append(out, b...)
	}
	return out
}

func openLog(t testing.TB, dir string, opts Options) *Log {
	t.Helper()
	l, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return l
}

func appendBatch(t testing.TB, l *Log, m *model, b []byte) int64 {
	t.Helper()
	want := l.NextOffset()
	base, err := l.Append(b)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	if base != want {
		t.Fatalf("Append gave base %d, NextOffset was %d", base, want)
	}
	if m != nil {
		m.add(b, base)
	}
	return base
}

func readAll(t testing.TB, l *Log, offset int64, maxBytes int) []byte {
	t.Helper()
	r, err := l.Read(offset, maxBytes)
	if err != nil {
		t.Fatalf("Read(%d, %d): %v", offset, maxBytes, err)
	}
	defer r.Release()
	out, err := r.AppendTo(nil)
	if err != nil {
		t.Fatalf("AppendTo: %v", err)
	}
	if int64(len(out)) != r.Size {
		t.Fatalf("AppendTo gave %d bytes, Size %d", len(out), r.Size)
	}
	if len(out) > 0 {
		var next int64
		for pos := 0; pos < len(out); {
			h, err := ParseHeader(out[pos:])
			if err != nil {
				t.Fatalf("Read(%d, %d): batch at %d: %v", offset, maxBytes, pos, err)
			}
			next, pos = h.NextOffset(), pos+h.Size()
		}
		if r.NextOffset != next {
			t.Fatalf("Read(%d, %d): NextOffset %d, the last batch ends before %d", offset, maxBytes, r.NextOffset, next)
		}
	}
	return out
}

// checkLog verifies that l holds exactly m: offsets, every read position, and sizes.
func checkLog(t testing.TB, l *Log, m *model) {
	t.Helper()
	if got, want := l.NextOffset(), m.next(); got != want {
		t.Fatalf("NextOffset %d, want %d", got, want)
	}
	var all []byte
	for _, b := range m.batches {
		all = append(all, b...)
	}
	if got := l.Size(); got != int64(len(all)) {
		t.Fatalf("Size %d, want %d", got, len(all))
	}
	if len(m.batches) == 0 {
		return
	}
	start := m.bases[0]
	if got := readAll(t, l, start, len(all)+1); !bytes.Equal(got, all) {
		t.Fatalf("full read from %d: %d bytes, want %d (equal prefix %d)", start, len(got), len(all), commonPrefix(got, all))
	}
	for off := start; off < m.next(); off++ {
		for _, mb := range []int{0, 3000} {
			if got, want := readAll(t, l, off, mb), m.expectRead(off, mb); !bytes.Equal(got, want) {
				t.Fatalf("Read(%d, %d): %d bytes, want %d", off, mb, len(got), len(want))
			}
		}
	}
}

func commonPrefix(a, b []byte) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

func fileLen(t testing.TB, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// trials is n, or short under -short.
func trials(n, short int) int {
	if testing.Short() {
		return short
	}
	return n
}
