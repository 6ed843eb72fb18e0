// Package kafkatest builds Kafka wire data for tests: record batches as a client sends them, so tests
// can send exactly what a client would, or something a client never should.
package kafkatest

import (
	"time"

	"github.com/sluicebroker/sluice/batch"
)

// Batch encodes one uncompressed, non-idempotent record batch v2 with one record per value (null keys,
// no headers), base offset 0, timestamps now.
func Batch(values ...[]byte) []byte {
	return IdempotentBatch(-1, -1, -1, values...)
}

// IdempotentBatch is Batch with a producer id, epoch and base sequence, as an idempotent producer sends.
func IdempotentBatch(producerID int64, epoch int16, baseSequence int32, values ...[]byte) []byte {
	return encode(0, batch.Producer{ID: producerID, Epoch: epoch, BaseSequence: baseSequence}, values)
}

// TransactionalBatch is IdempotentBatch with the transactional attribute, as a transactional
// producer sends it.
func TransactionalBatch(producerID int64, epoch int16, baseSequence int32, values ...[]byte) []byte {
	return encode(batch.AttrTransactional, batch.Producer{ID: producerID, Epoch: epoch, BaseSequence: baseSequence}, values)
}

func encode(attrs uint16, p batch.Producer, values [][]byte) []byte {
	recs := make([]batch.Record, len(values))
	for i, v := range values {
		if v == nil {
			v = []byte{} // an empty value, not a null one (a tombstone)
		}
		recs[i].Value = v
	}
	return batch.Encode(recs, time.Now().UnixMilli(), attrs, p)
}
