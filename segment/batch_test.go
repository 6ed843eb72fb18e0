package segment

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

func TestParseHeaderMatchesKmsg(t *testing.T) {
	b := makeBatch(5, 10, 1700000000000)
	PutBaseOffset(b, 42)
	PutPartitionLeaderEpoch(b, 7)
	h, err := Validate(b)
	if err != nil {
		t.Fatalf("Validate: %v", err)
	}
	var rb kmsg.RecordBatch
	if err := rb.ReadFrom(b); err != nil {
		t.Fatalf("kmsg: %v", err)
	}
	if h.BaseOffset != 42 || rb.FirstOffset != 42 || h.PartitionLeaderEpoch != 7 || rb.PartitionLeaderEpoch != 7 {
		t.Fatalf("base/epoch: %+v vs kmsg %d/%d", h, rb.FirstOffset, rb.PartitionLeaderEpoch)
	}
	if h.Length != rb.Length || h.Magic != rb.Magic || int32(h.CRC) != rb.CRC || h.Attributes != rb.Attributes ||
		h.LastOffsetDelta != rb.LastOffsetDelta || h.BaseTimestamp != rb.FirstTimestamp ||
		h.MaxTimestamp != rb.MaxTimestamp || h.ProducerID != rb.ProducerID || h.ProducerEpoch != rb.ProducerEpoch ||
		h.BaseSequence != rb.FirstSequence || h.RecordCount != rb.NumRecords {
		t.Fatalf("header %+v disagrees with kmsg %+v", h, rb)
	}
	if h.Size() != len(b) || h.LastOffset() != 46 || h.NextOffset() != 47 || h.Compression() != 0 ||
		h.IsControl() || h.IsTransactional() || h.HasLogAppendTime() {
		t.Fatalf("derived values wrong: %+v", h)
	}
	recs := make([]kmsg.Record, 0, 5)
	raw := rb.Records
	for range 5 {
		var r kmsg.Record
		n, _ := binary.Varint(raw)
		sz := binary.PutVarint(make([]byte, 10), n)
		if err := r.ReadFrom(raw[:sz+int(n)]); err != nil {
			t.Fatalf("record: %v", err)
		}
		raw = raw[sz+int(n):]
		recs = append(recs, r)
	}
	if len(raw) != 0 || len(recs[4].Value) != 10 || recs[4].OffsetDelta != 4 {
		t.Fatalf("records decode wrong: rest %d, last %+v", len(raw), recs[4])
	}
}

func TestValidateRejects(t *testing.T) {
	good := makeBatch(3, 20, 1000)
	mutate := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	be := binary.BigEndian
	cases := []struct {
		name string
		b    []byte
		want error
	}{
		{"short", good[:HeaderSize-1], ErrTruncated},
		{"cut", good[:len(good)-1], ErrTruncated},
		{"extra", append(append([]byte(nil), good...), 0), ErrCorrupt},
		{"magic", mutate(func(b []byte) []byte { b[offMagic] = 1; return b }), ErrBadMagic},
		{"crc", mutate(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), ErrCorrupt},
		{"attrs under crc", mutate(func(b []byte) []byte { b[offAttributes+1] ^= 4; return b }), ErrCorrupt},
		{"tiny length", mutate(func(b []byte) []byte { be.PutUint32(b[offLength:], 10); return b }), ErrCorrupt},
		{"count", mutate(func(b []byte) []byte {
			be.PutUint32(b[offRecordCount:], 4)
			be.PutUint32(b[offCRC:], crcOf(b))
			return b
		}), ErrCorrupt},
		{"negative count", mutate(func(b []byte) []byte {
			be.PutUint32(b[offRecordCount:], ^uint32(0))
			be.PutUint32(b[offCRC:], crcOf(b))
			return b
		}), ErrCorrupt},
		{"timestamp", mutate(func(b []byte) []byte {
			be.PutUint64(b[offMaxTimestamp:], uint64(1)<<63)
			be.PutUint32(b[offCRC:], crcOf(b))
			return b
		}), ErrCorrupt},
	}
	for _, c := range cases {
		if _, err := Validate(c.b); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
	// Fields outside the CRC may change freely.
	b := mutate(func(b []byte) []byte { PutBaseOffset(b, 1<<40); PutPartitionLeaderEpoch(b, -5); return b })
	if _, err := Validate(b); err != nil {
		t.Fatalf("base offset / epoch change broke the batch: %v", err)
	}
}

func crcOf(b []byte) uint32 { return crc32.Checksum(b[offAttributes:], castagnoli) }

func TestSetLogAppendTime(t *testing.T) {
	b := makeBatch(2, 5, 100)
	SetLogAppendTime(b, 123456)
	h, err := Validate(b)
	if err != nil {
		t.Fatalf("Validate after SetLogAppendTime: %v", err)
	}
	if !h.HasLogAppendTime() || h.MaxTimestamp != 123456 || h.BaseTimestamp != 100 {
		t.Fatalf("header %+v", h)
	}
}
