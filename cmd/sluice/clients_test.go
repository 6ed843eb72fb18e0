package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// franzCodecs are the batch codecs Kafka defines, each stored and served as the producer sent it.
var franzCodecs = []struct {
	name  string
	codec kgo.CompressionCodec
}{
	{"none", kgo.NoCompression()},
	{"gzip", kgo.GzipCompression()},
	{"snappy", kgo.SnappyCompression()},
	{"lz4", kgo.Lz4Compression()},
	{"zstd", kgo.ZstdCompression()},
}

// TestFranzGo produces with franz-go's defaults (idempotent, acks=all) with keys, headers and every
// codec, then consumes from the start, a timestamp, the middle of a batch and the end, checking every
// record and offset.
func TestFranzGo(t *testing.T) {
	b := startBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	for _, c := range franzCodecs {
		t.Run(c.name, func(t *testing.T) {
			topic := "franz-" + c.name
			b.createTopic(topic, 3, nil)
			prod := b.client(kgo.ProducerBatchCompression(c.codec), kgo.ProducerLinger(5*time.Millisecond))
			const n = 600
			base := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
			sent := make([]*kgo.Record, n)
			for i := range sent {
				sent[i] = &kgo.Record{
					Topic:     topic,
					Key:       []byte(fmt.Sprintf("key-%d", i%17)),
					Value:     []byte(fmt.Sprintf("value-%d-%s", i, strings.Repeat("x", i%50))),
					Headers:   []kgo.RecordHeader{{Key: "i", Value: []byte(fmt.Sprint(i))}, {Key: "codec", Value: []byte(c.name)}},
					Timestamp: base.Add(time.Duration(i) * time.Millisecond),
				}
			}
			if err := prod.ProduceSync(ctx, sent...).FirstErr(); err != nil {
				t.Fatalf("produce: %v", err)
			}
			got := consumeAll(t, b, topic)
			checkRecords(t, sent, got)

			// Offsets are dense from 0 in every partition.
			perPartition := map[int32][]int64{}
			for _, r := range got {
				perPartition[r.Partition] = append(perPartition[r.Partition], r.Offset)
			}
			for p, offs := range perPartition {
				sort.Slice(offs, func(i, j int) bool { return offs[i] < offs[j] })
				for i, o := range offs {
					if o != int64(i) {
						t.Fatalf("partition %d: offset %d at position %d; offsets must be dense", p, o, i)
					}
				}
			}

			// From a timestamp: the first record at or after it, in the partition that holds record 300.
			target := sent[300]
			cons := b.client(kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{
				topic: {target.Partition: kgo.NewOffset().AfterMilli(target.Timestamp.UnixMilli())},
			}))
			first := pollOne(ctx, t, cons)
			if first.Offset != target.Offset || string(first.Value) != string(target.Value) {
				t.Fatalf("from timestamp %v: got offset %d %q, want offset %d %q", target.Timestamp, first.Offset, first.Value, target.Offset, target.Value)
			}

			// From the middle of a batch: lingered batches hold many records, so offset+1 of a record is
			// inside its batch for most records; the consumer must start exactly there.
			mid := sent[451]
			cons = b.client(kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{
				topic: {mid.Partition: kgo.NewOffset().At(mid.Offset)},
			}))
			if r := pollOne(ctx, t, cons); r.Offset != mid.Offset || string(r.Value) != string(mid.Value) {
				t.Fatalf("from offset %d: got offset %d %q", mid.Offset, r.Offset, r.Value)
			}
		})
	}

	t.Run("latest", func(t *testing.T) {
		topic := "franz-latest"
		b.createTopic(topic, 1, nil)
		prod := b.client()
		if err := prod.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("old")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		cons := b.client(kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtEnd()))
		// Let the consumer resolve the end offset before producing the new record.
		pollCtx, pollCancel := context.WithTimeout(ctx, 500*time.Millisecond)
		if fs := cons.PollFetches(pollCtx); fs.NumRecords() != 0 {
			t.Fatalf("consumer at end got %d records before any new produce", fs.NumRecords())
		}
		pollCancel()
		if err := prod.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("new")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if r := pollOne(ctx, t, cons); string(r.Value) != "new" || r.Offset != 1 {
			t.Fatalf("from latest: got offset %d %q, want offset 1 \"new\"", r.Offset, r.Value)
		}
	})
}

// pollOne returns the first record a consumer gets.
func pollOne(ctx context.Context, t *testing.T, cl *kgo.Client) *kgo.Record {
	t.Helper()
	for {
		fs := cl.PollRecords(ctx, 1)
		if ctx.Err() != nil {
			t.Fatal("no record before timeout")
		}
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", topic, p, err) })
		if recs := fs.Records(); len(recs) > 0 {
			return recs[0]
		}
	}
}

// TestSarama produces with sarama's idempotent sync producer in every codec and reads each partition
// back with its partition consumer.
func TestSarama(t *testing.T) {
	b := startBroker(t)
	codecs := []sarama.CompressionCodec{sarama.CompressionNone, sarama.CompressionGZIP, sarama.CompressionSnappy, sarama.CompressionLZ4, sarama.CompressionZSTD}
	for _, codec := range codecs {
		t.Run(codec.String(), func(t *testing.T) {
			topic := "sarama-" + codec.String()
			b.createTopic(topic, 2, nil)
			cfg := sarama.NewConfig()
			cfg.Version = sarama.V3_6_0_0
			cfg.Producer.Return.Successes = true
			cfg.Producer.RequiredAcks = sarama.WaitForAll
			cfg.Producer.Idempotent = true
			cfg.Net.MaxOpenRequests = 1
			cfg.Producer.Compression = codec
			cfg.Producer.Partitioner = sarama.NewHashPartitioner
			prod, err := sarama.NewSyncProducer([]string{b.Addr}, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer prod.Close()
			const n = 200
			type sentMsg struct {
				key, value string
				partition  int32
				offset     int64
			}
			var sent []sentMsg
			msgs := make([]*sarama.ProducerMessage, n)
			for i := range msgs {
				msgs[i] = &sarama.ProducerMessage{
					Topic:   topic,
					Key:     sarama.StringEncoder(fmt.Sprintf("k%d", i%7)),
					Value:   sarama.StringEncoder(fmt.Sprintf("sarama-%d", i)),
					Headers: []sarama.RecordHeader{{Key: []byte("n"), Value: []byte(fmt.Sprint(i))}},
				}
			}
			if err := prod.SendMessages(msgs); err != nil {
				t.Fatalf("send: %v", err)
			}
			for i, m := range msgs {
				sent = append(sent, sentMsg{fmt.Sprintf("k%d", i%7), fmt.Sprintf("sarama-%d", i), m.Partition, m.Offset})
			}

			cons, err := sarama.NewConsumer([]string{b.Addr}, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer cons.Close()
			got := map[[2]int64]*sarama.ConsumerMessage{}
			for p := int32(0); p < 2; p++ {
				want := 0
				for _, s := range sent {
					if s.partition == p {
						want++
					}
				}
				pc, err := cons.ConsumePartition(topic, p, sarama.OffsetOldest)
				if err != nil {
					t.Fatal(err)
				}
				timeout := time.After(30 * time.Second)
				for i := 0; i < want; i++ {
					select {
					case m := <-pc.Messages():
						got[[2]int64{int64(m.Partition), m.Offset}] = m
					case err := <-pc.Errors():
						t.Fatalf("partition %d: %v", p, err)
					case <-timeout:
						t.Fatalf("partition %d: %d of %d messages", p, i, want)
					}
				}
				pc.Close()
			}
			for i, s := range sent {
				m, ok := got[[2]int64{int64(s.partition), s.offset}]
				if !ok || string(m.Key) != s.key || string(m.Value) != s.value || len(m.Headers) != 1 || string(m.Headers[0].Value) != fmt.Sprint(i) {
					t.Fatalf("message %d at %d/%d: got %+v", i, s.partition, s.offset, m)
				}
			}
		})
	}
}

// TestKafkaGo writes with segmentio/kafka-go's Writer and reads back with its Reader.
func TestKafkaGo(t *testing.T) {
	b := startBroker(t)
	codecs := []struct {
		name  string
		codec kafka.Compression
	}{{"none", 0}, {"gzip", kafka.Gzip}, {"snappy", kafka.Snappy}, {"lz4", kafka.Lz4}, {"zstd", kafka.Zstd}}
	for _, c := range codecs {
		name := c.name
		t.Run(name, func(t *testing.T) {
			topic := "kafkago-" + name
			b.createTopic(topic, 1, nil)
			w := &kafka.Writer{
				Addr:         kafka.TCP(b.Addr),
				Topic:        topic,
				RequiredAcks: kafka.RequireAll,
				BatchTimeout: 5 * time.Millisecond,
				BatchSize:    50,
				Compression:  c.codec,
				Transport:    &kafka.Transport{}, // the shared default caches metadata across brokers and tests
			}
			defer w.Close()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			const n = 150
			msgs := make([]kafka.Message, n)
			for i := range msgs {
				msgs[i] = kafka.Message{
					Key:     []byte(fmt.Sprintf("k%d", i)),
					Value:   []byte(fmt.Sprintf("kafka-go-%d", i)),
					Headers: []kafka.Header{{Key: "i", Value: []byte(fmt.Sprint(i))}},
				}
			}
			if err := w.WriteMessages(ctx, msgs...); err != nil {
				t.Fatalf("write: %v", err)
			}
			r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{b.Addr}, Topic: topic, Partition: 0, MaxWait: 100 * time.Millisecond})
			defer r.Close()
			for i := 0; i < n; i++ {
				m, err := r.ReadMessage(ctx)
				if err != nil {
					t.Fatalf("read %d: %v", i, err)
				}
				if m.Offset != int64(i) || string(m.Key) != fmt.Sprintf("k%d", i) || string(m.Value) != fmt.Sprintf("kafka-go-%d", i) ||
					len(m.Headers) != 1 || string(m.Headers[0].Value) != fmt.Sprint(i) {
					t.Fatalf("message %d: got offset %d key %q value %q headers %v", i, m.Offset, m.Key, m.Value, m.Headers)
				}
			}
		})
	}
}

// TestKcat round-trips keyed messages through librdkafka's kcat, producing and consuming with zstd.
// CI installs kcat (.ci/run); a developer machine without it skips, CI never does.
func TestKcat(t *testing.T) {
	requireKcat(t)
	kcatRoundTrip(t, startBroker(t), "-z", "zstd")
}

// TestPipelinedIdempotentProduce keeps several produce requests in flight on one connection, as
// franz-go does by default. The broker must propose them in arrival order: if it did not, a later batch
// could reach Raft before an earlier one, fail with OUT_OF_ORDER_SEQUENCE_NUMBER, and make the client
// bump its producer epoch and stall. The producer's epoch staying 0 proves no such failure happened.
func TestPipelinedIdempotentProduce(t *testing.T) {
	b := startBroker(t)
	const topic = "pipelined"
	b.createTopic(topic, 8, nil)
	cl := b.client(kgo.ProducerLinger(time.Millisecond)) // idempotent: up to 5 requests in flight per broker
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	value := make([]byte, 100)
	const n = 100_000
	var failed error
	done := make(chan struct{}, n)
	for i := 0; i < n; i++ {
		cl.Produce(ctx, &kgo.Record{Topic: topic, Value: value}, func(_ *kgo.Record, err error) {
			if err != nil && failed == nil {
				failed = err
			}
			done <- struct{}{}
		})
	}
	for i := 0; i < n; i++ {
		<-done
	}
	if failed != nil {
		t.Fatalf("produce: %v", failed)
	}
	id, epoch, err := cl.ProducerID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if epoch != 0 {
		t.Fatalf("producer %d is at epoch %d: a pipelined batch was refused and the client had to reset", id, epoch)
	}
	ends, err := b.admin().ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
	if total != n {
		t.Fatalf("partitions hold %d records, produced %d", total, n)
	}
}
