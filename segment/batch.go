package segment

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/sluicebroker/sluice/batch"
)

// HeaderSize is the size of the v2 batch header; records start at this byte.
const HeaderSize = batch.HeaderSize

// patchedHeaderLen covers the header fields AppendWithEpoch sets: base offset, length (unchanged),
// partition leader epoch; all outside the CRC.
const patchedHeaderLen = 16

// Byte positions of the v2 batch header fields (package batch owns the layout).
const (
	offBaseOffset      = batch.PosBaseOffset
	offLength          = batch.PosLength
	offLeaderEpoch     = batch.PosLeaderEpoch
	offMagic           = batch.PosMagic
	offCRC             = batch.PosCRC
	offAttributes      = batch.PosAttributes
	offLastOffsetDelta = batch.PosLastOffsetDelta
	offBaseTimestamp   = batch.PosBaseTimestamp
	offMaxTimestamp    = batch.PosMaxTimestamp
	offProducerID      = batch.PosProducerID
	offProducerEpoch   = batch.PosProducerEpoch
	offBaseSequence    = batch.PosBaseSequence
	offRecordCount     = batch.PosRecordCount

	// lengthPrefix is the part of a batch that its Length field does not count.
	lengthPrefix = batch.LengthPrefix
)

const (
	attrCompressionMask = batch.AttrCompression
	attrLogAppendTime   = batch.AttrLogAppendTime
	attrTransactional   = batch.AttrTransactional
	attrControl         = batch.AttrControl
)

// Typed errors; they work with errors.Is through any wrapping done here.
var (
	ErrCorrupt          = errors.New("segment: corrupt record batch")
	ErrBadMagic         = errors.New("segment: unsupported record batch magic")
	ErrTruncated        = errors.New("segment: truncated record batch")
	ErrOffsetOutOfRange = errors.New("segment: offset out of range")
	ErrNotBatchBoundary = errors.New("segment: offset is not a batch boundary")
	ErrClosed           = errors.New("segment: log closed")
)

var castagnoli = batch.Castagnoli

// Header is the decoded v2 batch header.
type Header struct {
	BaseOffset           int64
	Length               int32 // bytes after the Length field; the whole batch is Length+12
	PartitionLeaderEpoch int32
	Magic                int8
	CRC                  uint32
	Attributes           int16
	LastOffsetDelta      int32
	BaseTimestamp        int64
	MaxTimestamp         int64
	ProducerID           int64
	ProducerEpoch        int16
	BaseSequence         int32
	RecordCount          int32
}

// Size is the number of bytes of the whole batch.
func (h Header) Size() int { return int(h.Length) + lengthPrefix }

// LastOffset is the offset of the batch's last record.
func (h Header) LastOffset() int64 { return h.BaseOffset + int64(h.LastOffsetDelta) }

// NextOffset is the offset that follows the batch.
func (h Header) NextOffset() int64 { return h.LastOffset() + 1 }

// Compression is the codec: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
func (h Header) Compression() int8 { return int8(h.Attributes & attrCompressionMask) }

// IsTransactional reports the transactional attribute bit.
func (h Header) IsTransactional() bool { return h.Attributes&attrTransactional != 0 }

// IsControl reports the control-batch attribute bit.
func (h Header) IsControl() bool { return h.Attributes&attrControl != 0 }

// HasLogAppendTime reports whether MaxTimestamp is the broker's append time.
func (h Header) HasLogAppendTime() bool { return h.Attributes&attrLogAppendTime != 0 }

// ParseHeader reads the header at the start of b. It checks the length, the magic and that Length
// covers at least the header; it does not check the CRC.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, fmt.Errorf("%w: %d bytes, header needs %d", ErrTruncated, len(b), HeaderSize)
	}
	be := binary.BigEndian
	h := Header{
		BaseOffset:           int64(be.Uint64(b[offBaseOffset:])),
		Length:               int32(be.Uint32(b[offLength:])),
		PartitionLeaderEpoch: int32(be.Uint32(b[offLeaderEpoch:])),
		Magic:                int8(b[offMagic]),
		CRC:                  be.Uint32(b[offCRC:]),
		Attributes:           int16(be.Uint16(b[offAttributes:])),
		LastOffsetDelta:      int32(be.Uint32(b[offLastOffsetDelta:])),
		BaseTimestamp:        int64(be.Uint64(b[offBaseTimestamp:])),
		MaxTimestamp:         int64(be.Uint64(b[offMaxTimestamp:])),
		ProducerID:           int64(be.Uint64(b[offProducerID:])),
		ProducerEpoch:        int16(be.Uint16(b[offProducerEpoch:])),
		BaseSequence:         int32(be.Uint32(b[offBaseSequence:])),
		RecordCount:          int32(be.Uint32(b[offRecordCount:])),
	}
	if h.Magic != 2 {
		return h, fmt.Errorf("%w: %d", ErrBadMagic, h.Magic)
	}
	if h.Length < HeaderSize-lengthPrefix {
		return h, fmt.Errorf("%w: length %d shorter than the header", ErrCorrupt, h.Length)
	}
	return h, nil
}

// Validate checks that b is exactly one whole, intact batch and returns its header.
func Validate(b []byte) (Header, error) {
	h, err := ParseHeader(b)
	if err != nil {
		return h, err
	}
	if n := h.Size(); n != len(b) {
		if n > len(b) {
			return h, fmt.Errorf("%w: batch of %d bytes in %d", ErrTruncated, n, len(b))
		}
		return h, fmt.Errorf("%w: batch of %d bytes followed by %d more", ErrCorrupt, n, len(b)-n)
	}
	if sum := crc32.Checksum(b[offAttributes:], castagnoli); sum != h.CRC {
		return h, fmt.Errorf("%w: crc %08x, computed %08x", ErrCorrupt, h.CRC, sum)
	}
	return h, checkCounts(h, false)
}

// checkCounts checks the header fields that must agree with each other. A batch the log cleaner
// rewrote (compacted) keeps its offset range with fewer records: stored batches may hold fewer
// records than offsets, a batch a client sends may not.
func checkCounts(h Header, compacted bool) error {
	if h.RecordCount < 0 || h.LastOffsetDelta < 0 {
		return fmt.Errorf("%w: record count %d, last offset delta %d", ErrCorrupt, h.RecordCount, h.LastOffsetDelta)
	}
	if compacted && int64(h.RecordCount) > int64(h.LastOffsetDelta)+1 {
		return fmt.Errorf("%w: record count %d with last offset delta %d", ErrCorrupt, h.RecordCount, h.LastOffsetDelta)
	}
	if !compacted && h.RecordCount > 0 && int64(h.LastOffsetDelta)+1 != int64(h.RecordCount) {
		return fmt.Errorf("%w: record count %d with last offset delta %d", ErrCorrupt, h.RecordCount, h.LastOffsetDelta)
	}
	// -1 means "no timestamp"; Java clients refuse anything lower, so lower values are garbage.
	// (Max below base is not checked: Kafka accepts it and compressed records cannot be looked at.)
	if h.BaseTimestamp < -1 || h.MaxTimestamp < -1 {
		return fmt.Errorf("%w: timestamps base %d max %d", ErrCorrupt, h.BaseTimestamp, h.MaxTimestamp)
	}
	return nil
}

// PutBaseOffset writes the base offset (bytes 0..8, outside the CRC).
func PutBaseOffset(b []byte, off int64) { binary.BigEndian.PutUint64(b[offBaseOffset:], uint64(off)) }

// PutPartitionLeaderEpoch writes the partition leader epoch (bytes 12..16, outside the CRC).
func PutPartitionLeaderEpoch(b []byte, e int32) {
	binary.BigEndian.PutUint32(b[offLeaderEpoch:], uint32(e))
}

// SetLogAppendTime marks the batch as stamped with the broker's time ts and recomputes the CRC.
// b must be one whole batch.
func SetLogAppendTime(b []byte, ts int64) {
	be := binary.BigEndian
	be.PutUint16(b[offAttributes:], be.Uint16(b[offAttributes:])|attrLogAppendTime)
	be.PutUint64(b[offMaxTimestamp:], uint64(ts))
	be.PutUint32(b[offCRC:], crc32.Checksum(b[offAttributes:], castagnoli))
}
