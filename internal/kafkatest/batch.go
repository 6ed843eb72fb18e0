// Package kafkatest builds Kafka wire data for tests: record batches made byte by byte, so tests can
// send exactly what a client would, or something a client never should.
package kafkatest

import (
	"encoding/binary"
	"hash/crc32"
	"time"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kmsg"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Batch encodes one uncompressed, non-idempotent record batch v2 with one record per value (null keys,
// no headers), base offset 0, timestamps now.
func Batch(values ...[]byte) []byte {
	return IdempotentBatch(-1, -1, -1, values...)
}

// IdempotentBatch is Batch with a producer id, epoch and base sequence, as an idempotent producer sends.
func IdempotentBatch(producerID int64, epoch int16, baseSequence int32, values ...[]byte) []byte {
	var records []byte
	for i, v := range values {
		var rec []byte
		rec = append(rec, 0)                   // attributes
		rec = kbin.AppendVarlong(rec, 0)       // timestamp delta
		rec = kbin.AppendVarint(rec, int32(i)) // offset delta
		rec = kbin.AppendVarint(rec, -1)       // null key
		rec = kbin.AppendVarint(rec, int32(len(v)))
		rec = append(rec, v...)
		rec = kbin.AppendVarint(rec, 0) // no headers
		records = kbin.AppendVarint(records, int32(len(rec)))
		records = append(records, rec...)
	}
	now := time.Now().UnixMilli()
	b := kmsg.RecordBatch{
		Magic:           2,
		Length:          int32(49 + len(records)),
		LastOffsetDelta: int32(len(values) - 1),
		FirstTimestamp:  now,
		MaxTimestamp:    now,
		ProducerID:      producerID,
		ProducerEpoch:   epoch,
		FirstSequence:   baseSequence,
		NumRecords:      int32(len(values)),
		Records:         records,
	}
	out := b.AppendTo(nil)
	binary.BigEndian.PutUint32(out[17:], crc32.Checksum(out[21:], castagnoli))
	return out
}

// TransactionalBatch is IdempotentBatch with the transactional attribute, as a transactional
// producer sends it.
func TransactionalBatch(producerID int64, epoch int16, baseSequence int32, values ...[]byte) []byte {
	b := IdempotentBatch(producerID, epoch, baseSequence, values...)
	binary.BigEndian.PutUint16(b[21:], binary.BigEndian.Uint16(b[21:])|0x10)
	binary.BigEndian.PutUint32(b[17:], crc32.Checksum(b[21:], castagnoli))
	return b
}
