package wire

import (
	"encoding/binary"
	"hash/crc32"
)

// HeaderSize is the size of a v2 record batch header, up to its first record.
const HeaderSize = 61

// Compression attribute codes of a record batch.
const (
	CodecNone   = 0
	CodecGzip   = 1
	CodecSnappy = 2
	CodecLz4    = 3
	CodecZstd   = 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// StampSize is the number of value bytes Append stamps (see loadgen.PutStamp).
const StampSize = 20

// slot is where one encoded record lies in a batch buffer, and what it was encoded with.
type slot struct {
	end   int   // offset just past the record
	stamp int   // offset of the value (the stamp is its first StampSize bytes)
	size  int   // value size
	key   int32 // key index, -1 for none
}

// Batch is a v2 record batch being filled, in flight, or waiting to be retried. Its buffer keeps
// the records of its last use: appending a record with the same value size and key as the record
// that held the same position last time only rewrites the stamp, so a steady workload encodes each
// record once per batch object and afterwards only stamps it (the CRC and compression are per send).
type Batch struct {
	Topic     int // the owner's topic index
	Partition int32
	Part      int     // the owner's partition index (topic*partitions + partition)
	N         int     // records
	Bytes     int64   // value bytes
	Intended  []int64 // per record: intended send time, Unix ns
	BaseSeq   int32
	Attempts  int
	SealedAt  int64 // Unix ns
	Order     int64 // the owner's seal order (retries are re-sorted by it)

	buf   []byte // header + uncompressed records
	out   []byte // header + compressed records
	wire  []byte // what goes out: buf or out
	slots []slot
	valid int // slots[:valid] describe buf
	end   int // Len, kept apart from slots (hot: read per record)
}

// NewBatch returns an empty batch with room for about capBytes and maxRecords records.
func NewBatch(capBytes, maxRecords int) *Batch {
	return &Batch{buf: make([]byte, HeaderSize, HeaderSize+capBytes), slots: make([]slot, 0, maxRecords), Intended: make([]int64, 0, maxRecords), end: HeaderSize}
}

// Reset empties the batch for reuse, keeping its encoded records.
func (b *Batch) Reset() {
	b.N, b.Bytes, b.Attempts, b.wire, b.end = 0, 0, 0, nil, HeaderSize
	b.Intended = b.Intended[:0]
}

// Len is the batch's encoded size so far (uncompressed).
func (b *Batch) Len() int { return b.end }

// RecordOverhead bounds what a record adds beyond its key and value (length, attributes,
// timestamp and offset deltas, key and value lengths, header count).
const RecordOverhead = 5 + 1 + 1 + 5 + 5 + 5 + 1

// Append adds a record whose value is size bytes: the stamp (intended, producer, seq), then
// payload[StampSize:size]. payload must be the same bytes each time this position of the batch
// is filled with this size (the caller derives it from the position), since a reused record keeps
// the payload it was encoded with.
func (b *Batch) Append(size int, keyIdx int32, key, payload []byte, intended int64, producer uint32, seq uint64) {
	i := b.N
	start := b.end
	if i >= b.valid || b.slots[i].size != size || b.slots[i].key != keyIdx {
		b.buf = b.encode(b.buf[:start], i, size, key, payload)
		s := slot{end: len(b.buf), stamp: len(b.buf) - 1 - size, size: size, key: keyIdx}
		if i < len(b.slots) {
			b.slots[i] = s
		} else {
			b.slots = append(b.slots, s)
		}
		b.valid = i + 1
	}
	sl := &b.slots[i]
	b.end = sl.end
	v := b.buf[sl.stamp:]
	binary.BigEndian.PutUint64(v[0:8], uint64(intended))
	binary.BigEndian.PutUint32(v[8:12], producer)
	binary.BigEndian.PutUint64(v[12:20], seq)
	b.N++
	b.Bytes += int64(size)
	b.Intended = append(b.Intended, intended)
}

// encode appends record i: timestamp delta 0 (every record carries the batch's timestamp; the
// stamp in the value holds the real intended time), offset delta i, no headers.
func (b *Batch) encode(dst []byte, i, size int, key, payload []byte) []byte {
	keyLen := -1
	if key != nil {
		keyLen = len(key)
	}
	body := 1 + 1 + varintLen(int64(i)) + varintLen(int64(keyLen)) + max(keyLen, 0) + varintLen(int64(size)) + size + 1
	dst = binary.AppendVarint(dst, int64(body))
	dst = append(dst, 0, 0) // attributes, timestamp delta 0
	dst = binary.AppendVarint(dst, int64(i))
	dst = binary.AppendVarint(dst, int64(keyLen))
	dst = append(dst, key...)
	dst = binary.AppendVarint(dst, int64(size))
	dst = append(dst, make([]byte, StampSize)...)
	dst = append(dst, payload[StampSize:size]...)
	return append(dst, 0) // headers
}

func varintLen(v int64) int {
	u := uint64(v<<1) ^ uint64(v>>63)
	n := 1
	for u >= 0x80 {
		u >>= 7
		n++
	}
	return n
}

// Compressor compresses a batch's records; nil means none.
type Compressor interface {
	Codec() int16
	Compress(dst, src []byte) []byte
}

// Seal writes the header (timestamps nowMs, producer ID and epoch, base sequence), compresses
// the records if c is not nil, and computes the CRC. After Seal, Wire returns the bytes to send;
// a retry resends them unchanged (same sequence), as idempotence requires.
func (b *Batch) Seal(c Compressor, producerID int64, epoch int16, baseSeq int32, nowMs int64) {
	b.BaseSeq = baseSeq
	end := b.Len()
	var attrs int16
	w := b.buf[:end]
	if c != nil {
		attrs = c.Codec()
		b.out = c.Compress(append(b.out[:0], make([]byte, HeaderSize)...), b.buf[HeaderSize:end])
		w = b.out
	}
	h := w[:HeaderSize]
	binary.BigEndian.PutUint64(h[0:], 0)
	binary.BigEndian.PutUint32(h[8:], uint32(len(w)-12))
	binary.BigEndian.PutUint32(h[12:], 0xffffffff) // partition leader epoch -1
	h[16] = 2                                      // magic
	binary.BigEndian.PutUint16(h[21:], uint16(attrs))
	binary.BigEndian.PutUint32(h[23:], uint32(b.N-1))
	binary.BigEndian.PutUint64(h[27:], uint64(nowMs))
	binary.BigEndian.PutUint64(h[35:], uint64(nowMs))
	binary.BigEndian.PutUint64(h[43:], uint64(producerID))
	binary.BigEndian.PutUint16(h[51:], uint16(epoch))
	binary.BigEndian.PutUint32(h[53:], uint32(baseSeq))
	binary.BigEndian.PutUint32(h[57:], uint32(b.N))
	binary.BigEndian.PutUint32(h[17:], crc32.Checksum(w[21:], castagnoli))
	b.wire = w
}

// Wire is the sealed batch.
func (b *Batch) Wire() []byte { return b.wire }
