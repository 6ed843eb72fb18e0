// Package batch is the Kafka record batch v2 codec shared by the coordinators (group, txn), the broker
// and the tests: where each header field sits, the CRC-32C, encoding records into an uncompressed
// batch and decoding them back, transaction markers (control batches), and Kafka's partitioner for
// the coordinators' internal topics. It imports no other Sluice package, so segment and replica can
// build on it. Validation of client batches stays in segment, which stores them.
//
// The v2 layout (KIP-98), big-endian:
//
//	baseOffset i64 | length i32 | partitionLeaderEpoch i32 | magic i8 | crc u32 |
//	attributes i16 | lastOffsetDelta i32 | baseTimestamp i64 | maxTimestamp i64 |
//	producerId i64 | producerEpoch i16 | baseSequence i32 | recordCount i32 | records
//
// The CRC covers attributes to the end, so the broker may set base offset and leader epoch without
// recomputing it.
package batch

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
)

// HeaderSize is the size of the v2 batch header; records start at this byte.
const HeaderSize = 61

// Byte positions of the v2 header fields.
const (
	PosBaseOffset      = 0
	PosLength          = 8
	PosLeaderEpoch     = 12
	PosMagic           = 16
	PosCRC             = 17
	PosAttributes      = 21
	PosLastOffsetDelta = 23
	PosBaseTimestamp   = 27
	PosMaxTimestamp    = 35
	PosProducerID      = 43
	PosProducerEpoch   = 51
	PosBaseSequence    = 53
	PosRecordCount     = 57

	// LengthPrefix is the part of a batch that its length field does not count.
	LengthPrefix = 12
)

// Attribute bits.
const (
	AttrCompression   = 0x07 // mask: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd
	AttrLogAppendTime = 0x08
	AttrTransactional = 0x10
	AttrControl       = 0x20
)

// Castagnoli is the CRC-32C table of every batch checksum.
var Castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Checksum computes the CRC of the whole batch b (attributes to the end).
func Checksum(b []byte) uint32 { return crc32.Checksum(b[PosAttributes:], Castagnoli) }

// PutCRC recomputes and writes the CRC of the whole batch b, after its covered fields changed.
func PutCRC(b []byte) { binary.BigEndian.PutUint32(b[PosCRC:], Checksum(b)) }

// Record is one record's key and value; a nil one is null (a nil Value is a tombstone).
type Record struct {
	Key, Value []byte
}

// Producer is the producer fields of a batch header.
type Producer struct {
	ID           int64
	Epoch        int16
	BaseSequence int32
}

// NoProducer is what a batch of a producer that is neither idempotent nor transactional carries.
var NoProducer = Producer{ID: -1, Epoch: -1, BaseSequence: -1}

// Encode builds an uncompressed batch v2 at base offset 0 (leader epoch 0) holding recs, with every
// timestamp ts (Unix ms), the attributes attrs (AttrTransactional, AttrControl or 0) and producer p.
// Records carry no headers.
func Encode(recs []Record, ts int64, attrs uint16, p Producer) []byte {
	var body []byte
	for i, r := range recs {
		var rec []byte
		rec = append(rec, 0)                     // attributes
		rec = binary.AppendVarint(rec, 0)        // timestamp delta
		rec = binary.AppendVarint(rec, int64(i)) // offset delta
		rec = appendVarBytes(rec, r.Key)
		rec = appendVarBytes(rec, r.Value)
		rec = binary.AppendVarint(rec, 0) // headers
		body = binary.AppendVarint(body, int64(len(rec)))
		body = append(body, rec...)
	}
	be := binary.BigEndian
	b := make([]byte, HeaderSize, HeaderSize+len(body))
	be.PutUint32(b[PosLength:], uint32(HeaderSize-LengthPrefix+len(body)))
	b[PosMagic] = 2
	be.PutUint16(b[PosAttributes:], attrs)
	be.PutUint32(b[PosLastOffsetDelta:], uint32(len(recs)-1))
	be.PutUint64(b[PosBaseTimestamp:], uint64(ts))
	be.PutUint64(b[PosMaxTimestamp:], uint64(ts))
	be.PutUint64(b[PosProducerID:], uint64(p.ID))
	be.PutUint16(b[PosProducerEpoch:], uint16(p.Epoch))
	be.PutUint32(b[PosBaseSequence:], uint32(p.BaseSequence))
	be.PutUint32(b[PosRecordCount:], uint32(len(recs)))
	b = append(b, body...)
	PutCRC(b)
	return b
}

func appendVarBytes(b, v []byte) []byte {
	if v == nil {
		return binary.AppendVarint(b, -1)
	}
	b = binary.AppendVarint(b, int64(len(v)))
	return append(b, v...)
}

// ErrMalformed is returned by Decode for bytes that are not whole batches of well-formed records.
var ErrMalformed = errors.New("batch: malformed record batch")

// Info is the part of a batch header Decode reports beside each of its records.
type Info struct {
	Attributes    uint16
	ProducerID    int64
	ProducerEpoch int16
}

// IsControl reports a control batch (its records are transaction markers).
func (i Info) IsControl() bool { return i.Attributes&AttrControl != 0 }

// IsTransactional reports a batch written inside a transaction.
func (i Info) IsTransactional() bool { return i.Attributes&AttrTransactional != 0 }

// Decode calls fn for each record of the batches in buf (whole batches back to back, as a partition
// read returns them) and returns the offset after the last batch (-1 if none). Compressed batches
// are skipped: only the coordinators' own topics are decoded, and they never write one. The CRC is
// not checked (the log did when the batch was stored). Key and Value point into buf.
func Decode(buf []byte, fn func(Info, Record)) (next int64, err error) {
	be := binary.BigEndian
	next = -1
	for len(buf) >= HeaderSize {
		size := int(int32(be.Uint32(buf[PosLength:]))) + LengthPrefix
		if size < HeaderSize || size > len(buf) {
			return next, ErrMalformed
		}
		b := buf[:size]
		buf = buf[size:]
		next = int64(be.Uint64(b[PosBaseOffset:])) + int64(int32(be.Uint32(b[PosLastOffsetDelta:]))) + 1
		info := Info{
			Attributes:    be.Uint16(b[PosAttributes:]),
			ProducerID:    int64(be.Uint64(b[PosProducerID:])),
			ProducerEpoch: int16(be.Uint16(b[PosProducerEpoch:])),
		}
		if info.Attributes&AttrCompression != 0 {
			continue
		}
		n := int(int32(be.Uint32(b[PosRecordCount:])))
		recs := b[HeaderSize:]
		for range n {
			var r Record
			if r, recs, err = decodeRecord(recs); err != nil {
				return next, err
			}
			fn(info, r)
		}
	}
	return next, nil
}

// decodeRecord reads one record (length, attributes, timestamp delta, offset delta, key, value; the
// headers are not read) from the start of b and returns it with the bytes after it.
func decodeRecord(b []byte) (Record, []byte, error) {
	l, n := binary.Varint(b)
	if n <= 0 || l < 0 || l > int64(len(b)-n) {
		return Record{}, nil, ErrMalformed
	}
	rec, rest := b[n:n+int(l)], b[n+int(l):]
	if len(rec) < 1 {
		return Record{}, nil, ErrMalformed
	}
	rec = rec[1:] // attributes
	for range 2 { // timestamp delta, offset delta
		_, n := binary.Varint(rec)
		if n <= 0 {
			return Record{}, nil, ErrMalformed
		}
		rec = rec[n:]
	}
	var r Record
	var ok bool
	if r.Key, rec, ok = readVarBytes(rec); !ok {
		return Record{}, nil, ErrMalformed
	}
	if r.Value, _, ok = readVarBytes(rec); !ok {
		return Record{}, nil, ErrMalformed
	}
	return r, rest, nil
}

func readVarBytes(b []byte) (v, rest []byte, ok bool) {
	l, n := binary.Varint(b)
	switch {
	case n <= 0 || l < -1 || l > int64(len(b)-n):
		return nil, nil, false
	case l == -1:
		return nil, b[n:], true
	}
	return b[n : n+int(l)], b[n+int(l):], true
}
