package txn

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Record is one key/value of the __transaction_state log; a nil Value is a tombstone.
type Record struct {
	Key, Value []byte
}

// PartitionFor is Kafka's choice of __transaction_state partition for a transactional id:
// abs(javaHashCode(id)) % partitions, with abs(MinInt32) = 0 (the same rule as for groups).
func PartitionFor(txnID string, partitions int32) int32 {
	var h int32
	for _, r := range txnID {
		if r >= 0x10000 { // a surrogate pair in Java's UTF-16 string
			r -= 0x10000
			h = 31*h + int32(0xD800+(r>>10))
			h = 31*h + int32(0xDC00+(r&0x3FF))
			continue
		}
		h = 31*h + int32(r)
	}
	if h == -1<<31 {
		h = 0
	} else if h < 0 {
		h = -h
	}
	return h % partitions
}

// encodeRecord is Kafka's TransactionLog record: key version 0 (the id), value version 0.
func encodeRecord(t *txn) Record {
	k := kmsg.NewTxnMetadataKey()
	k.TransactionalID = t.id
	v := kmsg.NewTxnMetadataValue()
	v.ProducerID, v.ProducerEpoch, v.TimeoutMillis = t.pid, t.epoch, t.timeoutMs
	v.State = t.state
	v.LastUpdateTimestamp = t.lastUpdate.UnixMilli()
	v.StartTimestamp = -1
	if !t.start.IsZero() {
		v.StartTimestamp = t.start.UnixMilli()
	}
	for _, tp := range t.sortedParts() {
		if n := len(v.Topics); n == 0 || v.Topics[n-1].Topic != tp.Topic {
			vt := kmsg.NewTxnMetadataValueTopic()
			vt.Topic = tp.Topic
			v.Topics = append(v.Topics, vt)
		}
		vt := &v.Topics[len(v.Topics)-1]
		vt.Partitions = append(vt.Partitions, tp.Partition)
	}
	return Record{Key: k.AppendTo(nil), Value: v.AppendTo(nil)}
}

// decodeRecord reads a TransactionLog record back; ok is false for records of other kinds.
func decodeRecord(r Record) (id string, t *txn, ok bool) {
	var k kmsg.TxnMetadataKey
	if len(r.Key) < 2 || k.ReadFrom(r.Key) != nil || k.Version != 0 {
		return "", nil, false
	}
	if r.Value == nil {
		return k.TransactionalID, nil, true
	}
	var v kmsg.TxnMetadataValue
	if v.ReadFrom(r.Value) != nil {
		return "", nil, false
	}
	t = &txn{id: k.TransactionalID, pid: v.ProducerID, epoch: v.ProducerEpoch, timeoutMs: v.TimeoutMillis, state: v.State,
		parts: map[TopicPartition]struct{}{}, lastUpdate: time.UnixMilli(v.LastUpdateTimestamp)}
	if v.StartTimestamp >= 0 {
		t.start = time.UnixMilli(v.StartTimestamp)
	}
	for _, vt := range v.Topics {
		for _, p := range vt.Partitions {
			t.parts[TopicPartition{vt.Topic, p}] = struct{}{}
		}
	}
	return k.TransactionalID, t, true
}

func (t *txn) sortedParts() []TopicPartition {
	out := make([]TopicPartition, 0, len(t.parts))
	for tp := range t.parts {
		out = append(out, tp)
	}
	slices.SortFunc(out, func(a, b TopicPartition) int {
		if a.Topic != b.Topic {
			if a.Topic < b.Topic {
				return -1
			}
			return 1
		}
		return int(a.Partition - b.Partition)
	})
	return out
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// EncodeBatch builds an uncompressed record batch v2 (base offset 0) holding recs.
func EncodeBatch(recs []Record, now time.Time) []byte {
	ts := now.UnixMilli()
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
	b := make([]byte, 61, 61+len(body))
	binary.BigEndian.PutUint32(b[8:], uint32(49+len(body)))
	b[16] = 2
	binary.BigEndian.PutUint32(b[23:], uint32(len(recs)-1))
	binary.BigEndian.PutUint64(b[27:], uint64(ts))
	binary.BigEndian.PutUint64(b[35:], uint64(ts))
	binary.BigEndian.PutUint64(b[43:], ^uint64(0)) // producer id -1
	binary.BigEndian.PutUint16(b[51:], 0xFFFF)     // producer epoch -1
	binary.BigEndian.PutUint32(b[53:], 0xFFFFFFFF) // base sequence -1
	binary.BigEndian.PutUint32(b[57:], uint32(len(recs)))
	b = append(b, body...)
	binary.BigEndian.PutUint32(b[17:], crc32.Checksum(b[21:], castagnoli))
	return b
}

func appendVarBytes(b, v []byte) []byte {
	if v == nil {
		return binary.AppendVarint(b, -1)
	}
	b = binary.AppendVarint(b, int64(len(v)))
	return append(b, v...)
}

var errBadBatch = errors.New("txn: malformed record batch in __transaction_state")

// DecodeBatches calls fn for each record of the uncompressed batches in buf (whole batches back to
// back, as a partition read returns them) and returns the offset after the last batch (-1 if none).
func DecodeBatches(buf []byte, fn func(Record)) (next int64, err error) {
	next = -1
	for len(buf) >= 61 {
		size := int(int32(binary.BigEndian.Uint32(buf[8:]))) + 12
		if size < 61 || size > len(buf) {
			return next, errBadBatch
		}
		batch := buf[:size]
		buf = buf[size:]
		next = int64(binary.BigEndian.Uint64(batch[0:])) + int64(int32(binary.BigEndian.Uint32(batch[23:]))) + 1
		if attrs := binary.BigEndian.Uint16(batch[21:]); attrs&0x7 != 0 || attrs&0x20 != 0 {
			continue // the coordinator never writes compressed or control batches
		}
		n := int(int32(binary.BigEndian.Uint32(batch[57:])))
		r := kbin.Reader{Src: batch[61:]}
		for i := 0; i < n; i++ {
			l := r.Varint()
			if !r.Ok() || l < 0 || int(l) > len(r.Src) {
				return next, errBadBatch
			}
			rec := kbin.Reader{Src: r.Span(int(l))}
			rec.Int8()
			rec.Varlong()
			rec.Varint()
			key := rec.VarintBytes()
			val := rec.VarintBytes()
			if !rec.Ok() {
				return next, errBadBatch
			}
			fn(Record{Key: key, Value: val})
		}
	}
	return next, nil
}
