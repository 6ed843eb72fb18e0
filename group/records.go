package group

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"time"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Record is one key/value of the __consumer_offsets log; a nil Value is a tombstone.
type Record struct {
	Key, Value []byte
}

// PartitionFor is Kafka's choice of __consumer_offsets partition for a group:
// abs(javaHashCode(groupID)) % partitions, with abs(MinInt32) = 0.
func PartitionFor(groupID string, partitions int32) int32 {
	var h int32
	for _, r := range groupID {
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

// offsetKey encodes Kafka's offset commit key (version 1).
func offsetKey(group, topic string, partition int32) []byte {
	k := kmsg.NewOffsetCommitKey()
	k.Version = 1
	k.Group, k.Topic, k.Partition = group, topic, partition
	return k.AppendTo(nil)
}

// offsetValue encodes Kafka's offset commit value (version 3).
func offsetValue(o Offset) []byte {
	v := kmsg.NewOffsetCommitValue()
	v.Version = 3
	v.Offset, v.LeaderEpoch, v.Metadata, v.CommitTimestamp = o.Offset, o.LeaderEpoch, o.Metadata, o.CommitTime.UnixMilli()
	return v.AppendTo(nil)
}

// EncodeBatch builds an uncompressed record batch v2 (base offset 0) holding recs.
func EncodeBatch(recs []Record, now time.Time) []byte {
	ts := now.UnixMilli()
	var body []byte
	for i, r := range recs {
		var rec []byte
		rec = append(rec, 0)                     // attributes
		rec = binary.AppendVarint(rec, 0)        // timestamp delta
		rec = binary.AppendVarint(rec, int64(i)) // offset delta
		rec = appendVarBytes(rec, r.Key)         // key
		rec = appendVarBytes(rec, r.Value)       // value
		rec = binary.AppendVarint(rec, 0)        // headers
		body = binary.AppendVarint(body, int64(len(rec)))
		body = append(body, rec...)
	}
	b := make([]byte, 61, 61+len(body))
	binary.BigEndian.PutUint64(b[0:], 0)
	binary.BigEndian.PutUint32(b[8:], uint32(49+len(body)))
	binary.BigEndian.PutUint32(b[12:], 0)
	b[16] = 2
	binary.BigEndian.PutUint16(b[21:], 0)
	binary.BigEndian.PutUint32(b[23:], uint32(len(recs)-1))
	binary.BigEndian.PutUint64(b[27:], uint64(ts))
	binary.BigEndian.PutUint64(b[35:], uint64(ts))
	binary.BigEndian.PutUint64(b[43:], ^uint64(0)) // producer id -1
	binary.BigEndian.PutUint16(b[51:], 0xFFFF)     // producer epoch -1
	binary.BigEndian.PutUint32(b[53:], 0xFFFFFFFF) // base sequence -1
	binary.BigEndian.PutUint32(b[57:], uint32(len(recs)))
	b = append(b, body...)
	binary.BigEndian.PutUint32(b[17:], crc32.Checksum(b[21:], crc32.MakeTable(crc32.Castagnoli)))
	return b
}

func appendVarBytes(b, v []byte) []byte {
	if v == nil {
		return binary.AppendVarint(b, -1)
	}
	b = binary.AppendVarint(b, int64(len(v)))
	return append(b, v...)
}

var errBadBatch = errors.New("group: malformed record batch in __consumer_offsets")

// DecodeBatches calls fn for each record of the uncompressed batches in buf (whole batches back to
// back, as a partition read returns them) and returns the offset after the last batch (-1 if none).
// Compressed and control batches are skipped: the coordinator never writes them.
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
		attrs := binary.BigEndian.Uint16(batch[21:])
		if attrs&0x7 != 0 || attrs&0x20 != 0 {
			continue
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
