package wire

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
)

// BatchHeader is what a reader needs of a record batch header.
type BatchHeader struct {
	BaseOffset      int64
	LastOffsetDelta int32
	Attributes      int16
	Count           int32
	ProducerID      int64
	BaseSequence    int32
}

// Codec is the batch's compression codec.
func (h BatchHeader) Codec() int16 { return h.Attributes & 7 }

// Control reports a transaction marker batch.
func (h BatchHeader) Control() bool { return h.Attributes&0x20 != 0 }

// NextBatch splits the first record batch off data (a fetch response partition's records).
// ok is false at the end, or for a trailing partial batch (a fetch may cut the last one).
// A batch of an older magic is skipped with records nil.
func NextBatch(data []byte) (h BatchHeader, records, rest []byte, ok bool, err error) {
	if len(data) < 17 {
		return h, nil, nil, false, nil
	}
	n := int(int32(binary.BigEndian.Uint32(data[8:])))
	if n < 0 || len(data) < 12+n {
		return h, nil, nil, false, nil
	}
	b, rest := data[:12+n], data[12+n:]
	h.BaseOffset = int64(binary.BigEndian.Uint64(b))
	if b[16] != 2 || len(b) < HeaderSize {
		return h, nil, rest, true, nil
	}
	h.Attributes = int16(binary.BigEndian.Uint16(b[21:]))
	h.LastOffsetDelta = int32(binary.BigEndian.Uint32(b[23:]))
	h.ProducerID = int64(binary.BigEndian.Uint64(b[43:]))
	h.BaseSequence = int32(binary.BigEndian.Uint32(b[53:]))
	h.Count = int32(binary.BigEndian.Uint32(b[57:]))
	return h, b[HeaderSize:], rest, true, nil
}

// CheckCRC verifies a whole batch's CRC-32C (tests only: readers trust TCP).
func CheckCRC(batch []byte) bool {
	return len(batch) >= HeaderSize && binary.BigEndian.Uint32(batch[17:]) == crc32.Checksum(batch[21:], castagnoli)
}

// RecordIter walks the records of one uncompressed batch body, decoding only the offset delta
// and the value.
type RecordIter struct {
	b    []byte
	left int32
	Err  error
}

// Records starts an iterator over n records in b.
func Records(b []byte, n int32) RecordIter { return RecordIter{b: b, left: n} }

var errRecord = errors.New("wire: malformed record")

// Next returns the next record's offset delta and value.
func (it *RecordIter) Next() (offsetDelta int32, value []byte, ok bool) {
	if it.left <= 0 || it.Err != nil {
		return 0, nil, false
	}
	it.left--
	l, n := binary.Varint(it.b)
	if n <= 0 || l < 0 || int64(len(it.b)-n) < l {
		it.Err = errRecord
		return 0, nil, false
	}
	rec := it.b[n : n+int(l)]
	it.b = it.b[n+int(l):]
	if len(rec) < 1 {
		it.Err = errRecord
		return 0, nil, false
	}
	rec = rec[1:] // attributes
	var v int64
	if _, n = binary.Varint(rec); n <= 0 { // timestamp delta
		it.Err = errRecord
		return 0, nil, false
	}
	rec = rec[n:]
	if v, n = binary.Varint(rec); n <= 0 {
		it.Err = errRecord
		return 0, nil, false
	}
	offsetDelta = int32(v)
	rec = rec[n:]
	if v, n = binary.Varint(rec); n <= 0 || v > int64(len(rec)-n) { // key
		it.Err = errRecord
		return 0, nil, false
	}
	rec = rec[n+max(int(v), 0):]
	if v, n = binary.Varint(rec); n <= 0 || v > int64(len(rec)-n) {
		it.Err = errRecord
		return 0, nil, false
	}
	if v < 0 {
		return offsetDelta, nil, true
	}
	return offsetDelta, rec[n : n+int(v)], true
}
