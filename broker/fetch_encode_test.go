package broker

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicebroker/sluice/internal/kafkatest"
	"github.com/sluicebroker/sluice/netio"
	"github.com/sluicebroker/sluice/replica"
	"github.com/sluicebroker/sluice/segment"
)

// materialize turns netio parts into the byte stream a client would receive, reading file ranges.
func materialize(t *testing.T, parts []netio.Part) []byte {
	t.Helper()
	var out []byte
	for _, p := range parts {
		if p.File == nil {
			out = append(out, p.Bytes...)
			continue
		}
		b := make([]byte, p.Len)
		if _, err := p.File.ReadAt(b, p.Off); err != nil {
			t.Fatal(err)
		}
		out = append(out, b...)
	}
	return out
}

// TestEncodeFetchResponse encodes a fetch response over real segment file ranges at every supported
// version and decodes it with kmsg: every field and the record bytes must come back as written.
func TestEncodeFetchResponse(t *testing.T) {
	log, err := segment.Open(t.TempDir(), segment.Options{SegmentBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	var want []byte
	for i := 0; i < 5; i++ {
		batch := kafkatest.Batch([]byte(fmt.Sprintf("a-%d", i)), []byte(fmt.Sprintf("b-%d", i)))
		if _, err := log.Append(batch); err != nil {
			t.Fatal(err)
		}
		want = append(want, batch...) // Append wrote the base offset into batch in place
	}
	api := apis[1]
	for v := api.min; v <= api.max; v++ {
		rr, err := log.Read(2, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		// Offset 2 is the first record of the second batch (two records per batch).
		if got := mustBytes(t, rr); !bytes.Equal(got, want[len(want)/5:]) {
			t.Fatalf("read from offset 2: %d bytes, want the last four batches (%d bytes)", len(got), len(want)*4/5)
		}
		topics := []fetchTopic{
			{name: "t1", id: [16]byte{1, 2, 3}, parts: []fetchPartition{
				{partition: 0, highWatermark: 10, lso: 8, ls: 0, data: rr,
					aborted: []replica.AbortedTxn{{ProducerID: 5, FirstOffset: 2, LastOffset: 6}, {ProducerID: 9, FirstOffset: 3, LastOffset: 7}}},
				{partition: 1, errCode: 3, highWatermark: -1, lso: -1, ls: -1},
			}},
			{name: "t2", id: [16]byte{4, 5, 6}, parts: []fetchPartition{{partition: 4, highWatermark: 0, lso: 0, ls: 0}}},
		}
		parts, _ := encodeFetchResponse(nil, 77, v, fetchHeader{sessionID: 1234}, topics)
		wire := materialize(t, parts)
		if got := int(binary.BigEndian.Uint32(wire)); got != len(wire)-4 {
			t.Fatalf("v%d: size prefix %d, frame is %d", v, got, len(wire)-4)
		}
		if corr := int32(binary.BigEndian.Uint32(wire[4:])); corr != 77 {
			t.Fatalf("v%d: correlation id %d", v, corr)
		}
		body := wire[8:]
		if v >= 12 {
			body = body[1:] // response header v1 tags
		}
		resp := kmsg.NewPtrFetchResponse()
		resp.Version = v
		if err := resp.ReadFrom(body); err != nil {
			t.Fatalf("v%d: kmsg cannot decode our encoding: %v", v, err)
		}
		if v >= 7 && resp.SessionID != 1234 {
			t.Fatalf("v%d: session id %d, want 1234", v, resp.SessionID)
		}
		switch {
		case len(resp.Topics) != 2:
			t.Fatalf("v%d: topics %+v", v, resp.Topics)
		case v < 13 && (resp.Topics[0].Topic != "t1" || resp.Topics[1].Topic != "t2"):
			t.Fatalf("v%d: topic names %q, %q", v, resp.Topics[0].Topic, resp.Topics[1].Topic)
		case v >= 13 && (resp.Topics[0].TopicID != [16]byte{1, 2, 3} || resp.Topics[1].TopicID != [16]byte{4, 5, 6}):
			t.Fatalf("v%d: topic ids %x, %x", v, resp.Topics[0].TopicID, resp.Topics[1].TopicID)
		}
		p0 := resp.Topics[0].Partitions[0]
		if p0.HighWatermark != 10 || p0.LastStableOffset != 8 || p0.ErrorCode != 0 {
			t.Fatalf("v%d: partition 0 = %+v", v, p0)
		}
		if a := p0.AbortedTransactions; len(a) != 2 || a[0].ProducerID != 5 || a[0].FirstOffset != 2 || a[1].ProducerID != 9 || a[1].FirstOffset != 3 {
			t.Fatalf("v%d: aborted transactions %+v", v, a)
		}
		if a := resp.Topics[1].Partitions[0].AbortedTransactions; a != nil {
			t.Fatalf("v%d: aborted transactions of a partition without any: %+v, want null", v, a)
		}
		if v >= 5 && p0.LogStartOffset != 0 {
			t.Fatalf("v%d: log start %d", v, p0.LogStartOffset)
		}
		if !bytes.Equal(p0.RecordBatches, mustBytes(t, rr)) {
			t.Fatalf("v%d: record bytes differ from the segment's", v)
		}
		if p1 := resp.Topics[0].Partitions[1]; p1.ErrorCode != 3 || p1.HighWatermark != -1 || len(p1.RecordBatches) != 0 {
			t.Fatalf("v%d: error partition = %+v", v, p1)
		}
		rr.Release()
	}
}

func mustBytes(t *testing.T, rr *segment.ReadResult) []byte {
	t.Helper()
	b, err := rr.AppendTo(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
