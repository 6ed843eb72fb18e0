package main

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicebroker/sluice/internal/kafkatest"
)

// TestBadInput sends what a broken or hostile client might: each case must get its Kafka error or close
// only its own connection, and the broker must keep serving everyone else.
func TestBadInput(t *testing.T) {
	b := startBroker(t)
	const topic = "bad-input"
	b.createTopic(topic, 1, map[string]*string{"max.message.bytes": strPtr("100000")})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl := b.client(kgo.ProducerBatchMaxBytes(16 << 20))

	healthy := func(t *testing.T) {
		t.Helper()
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("still serving")}).FirstErr(); err != nil {
			t.Fatalf("broker no longer serves after bad input: %v", err)
		}
	}

	rawClosed := func(t *testing.T, payload []byte) {
		t.Helper()
		c, err := net.Dial("tcp", b.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write(payload); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := io.Copy(io.Discard, c)
		if err != nil {
			t.Fatalf("connection not closed by the broker (read %d bytes): %v", n, err)
		}
	}

	t.Run("garbage frame", func(t *testing.T) {
		frame := append([]byte{0, 0, 0, 12}, []byte("hello world!")...)
		rawClosed(t, frame)
		healthy(t)
	})
	t.Run("absurd length", func(t *testing.T) {
		rawClosed(t, []byte{0x7f, 0xff, 0xff, 0xff, 1, 2, 3})
		healthy(t)
	})
	t.Run("negative length", func(t *testing.T) {
		rawClosed(t, []byte{0xff, 0xff, 0xff, 0xf0})
		healthy(t)
	})
	t.Run("unknown api key", func(t *testing.T) {
		body := binary.BigEndian.AppendUint16(nil, 999)
		body = binary.BigEndian.AppendUint16(body, 0)
		body = binary.BigEndian.AppendUint32(body, 7)
		body = binary.BigEndian.AppendUint16(body, 0xffff) // null client id
		rawClosed(t, append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...))
		healthy(t)
	})
	t.Run("disconnect mid-request", func(t *testing.T) {
		for i := 0; i < 20; i++ {
			c, err := net.Dial("tcp", b.Addr)
			if err != nil {
				t.Fatal(err)
			}
			// A produce frame announced as 1000 bytes, cut after 20.
			_, _ = c.Write(append([]byte{0, 0, 3, 0xe8, 0, 0, 0, 9}, make([]byte, 12)...))
			c.Close()
		}
		healthy(t)
	})
	t.Run("oversized record", func(t *testing.T) {
		err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: randomBytes(200000)}).FirstErr()
		if !errors.Is(err, kerr.MessageTooLarge) {
			t.Fatalf("200 kB record to a topic with max.message.bytes=100000: got %v, want MESSAGE_TOO_LARGE", err)
		}
		healthy(t)
	})
	t.Run("bad crc", func(t *testing.T) {
		batch := kafkatest.Batch([]byte("payload"))
		batch[len(batch)-3] ^= 0xff // flip a record byte: the CRC no longer matches
		if code := rawProduce(ctx, t, cl, topic, 0, batch); code != kerr.CorruptMessage.Code {
			t.Fatalf("bad CRC: error %d, want CORRUPT_MESSAGE (%d)", code, kerr.CorruptMessage.Code)
		}
		healthy(t)
	})
	t.Run("bad magic", func(t *testing.T) {
		batch := kafkatest.Batch([]byte("payload"))
		batch[16] = 1
		if code := rawProduce(ctx, t, cl, topic, 0, batch); code == 0 {
			t.Fatal("magic 1 batch accepted")
		}
	})
	t.Run("unknown partition", func(t *testing.T) {
		if code := rawProduce(ctx, t, cl, topic, 7, kafkatest.Batch([]byte("x"))); code != kerr.UnknownTopicOrPartition.Code {
			t.Fatalf("partition 7 of a 1-partition topic: error %d, want UNKNOWN_TOPIC_OR_PARTITION", code)
		}
		// Produce v13 names topics by id: an unknown topic has none, and gets UNKNOWN_TOPIC_ID.
		if code := rawProduce(ctx, t, cl, "no-such-topic", 0, kafkatest.Batch([]byte("x"))); code != kerr.UnknownTopicOrPartition.Code && code != kerr.UnknownTopicID.Code {
			t.Fatalf("unknown topic: error %d, want UNKNOWN_TOPIC_OR_PARTITION or UNKNOWN_TOPIC_ID", code)
		}
	})
	t.Run("idempotent sequences", func(t *testing.T) {
		init := kmsg.NewPtrInitProducerIDRequest()
		init.TransactionTimeoutMillis = 60000
		ir, err := init.RequestWith(ctx, cl.Broker(1))
		if err != nil || ir.ErrorCode != 0 || ir.ProducerID < 0 {
			t.Fatalf("InitProducerId: %v %+v", err, ir)
		}
		pid, epoch := ir.ProducerID, ir.ProducerEpoch
		send := func(seq int32, values ...string) (int16, int64) {
			var vs [][]byte
			for _, v := range values {
				vs = append(vs, []byte(v))
			}
			return rawProduceOffset(ctx, t, cl, topic, 0, kafkatest.IdempotentBatch(pid, epoch, seq, vs...))
		}
		code, first := send(0, "a", "b")
		if code != 0 {
			t.Fatalf("first batch: error %d", code)
		}
		if code, _ := send(5, "gap"); code != kerr.OutOfOrderSequenceNumber.Code {
			t.Fatalf("sequence gap: error %d, want OUT_OF_ORDER_SEQUENCE_NUMBER (%d)", code, kerr.OutOfOrderSequenceNumber.Code)
		}
		if code, dup := send(0, "a", "b"); code != 0 || dup != first {
			t.Fatalf("retried batch: error %d offset %d, want success at the original offset %d", code, dup, first)
		}
		if code, next := send(2, "c"); code != 0 || next != first+2 {
			t.Fatalf("next batch: error %d offset %d, want %d (the retry was not appended twice)", code, next, first+2)
		}
		old := epoch
		epoch--
		if code, _ := send(3, "stale"); code != kerr.InvalidProducerEpoch.Code && code != kerr.ProducerFenced.Code {
			t.Fatalf("older epoch: error %d, want INVALID_PRODUCER_EPOCH", code)
		}
		epoch = old
	})
	t.Run("invalid topic name", func(t *testing.T) {
		resp, err := b.admin().CreateTopic(ctx, 1, 1, nil, "bad/name")
		if err == nil {
			err = resp.Err
		}
		if !errors.Is(err, kerr.InvalidTopicException) {
			t.Fatalf("topic name with '/': got %v, want INVALID_TOPIC_EXCEPTION", err)
		}
	})
	t.Run("topic exists", func(t *testing.T) {
		resp, err := b.admin().CreateTopic(ctx, 1, 1, nil, topic)
		if err == nil {
			err = resp.Err
		}
		if !errors.Is(err, kerr.TopicAlreadyExists) {
			t.Fatalf("creating an existing topic: got %v, want TOPIC_ALREADY_EXISTS", err)
		}
	})
	t.Run("offset out of range", func(t *testing.T) {
		req := kmsg.NewPtrFetchRequest()
		req.MaxWaitMillis, req.MaxBytes = 10, 1<<20
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic, rt.TopicID = topic, topicID(t, b, topic) // Fetch v13+ names topics by id
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.FetchOffset, rp.PartitionMaxBytes = 1_000_000, 1<<20
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, cl.Broker(1))
		if err != nil {
			t.Fatal(err)
		}
		if code := resp.Topics[0].Partitions[0].ErrorCode; code != kerr.OffsetOutOfRange.Code {
			t.Fatalf("fetch at offset 1e6: error %d, want OFFSET_OUT_OF_RANGE", code)
		}
	})
	healthy(t)
}
