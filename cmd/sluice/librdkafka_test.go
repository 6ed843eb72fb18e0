package main

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicebroker/sluice/internal/kafkatest"
	"github.com/sluicebroker/sluice/internal/kafkawire"
)

// TestKcatCodecs produces with librdkafka (kcat) with each codec and reads back the batches'
// attributes: librdkafka decides from ApiVersions whether the broker can take a codec and, if not,
// sends the batch uncompressed without a word (gzip, snappy and lz4 need Produce v0 advertised). It
// also checks librdkafka's other feature gates: idempotence (a producer id on the batch) and headers.
func TestKcatCodecs(t *testing.T) {
	kcat := requireKcat(t)
	b := startBroker(t)
	codecs := []struct {
		name string
		code uint8 // the batch attributes' compression type
	}{{"gzip", 1}, {"snappy", 2}, {"lz4", 3}, {"zstd", 4}}
	for _, codec := range codecs {
		t.Run(codec.name, func(t *testing.T) {
			topic := "kcat-" + codec.name
			b.createTopic(topic, 1, nil)
			var in strings.Builder
			for i := range 50 {
				fmt.Fprintf(&in, "key%d:%s value %d %s\n", i, codec.name, i, strings.Repeat("compressible ", 20))
			}
			prod := exec.Command(kcat, "-b", b.Addr, "-t", topic, "-P", "-K:", "-z", codec.name,
				"-H", "h1=v1", "-X", "enable.idempotence=true", "-X", "linger.ms=20")
			prod.Stdin = strings.NewReader(in.String())
			if out, err := prod.CombinedOutput(); err != nil {
				t.Fatalf("kcat produce: %v\n%s", err, out)
			}
			got := consumeAll(t, b, topic)
			if len(got) != 50 {
				t.Fatalf("read %d records, want 50", len(got))
			}
			for _, r := range got {
				if c := r.Attrs.CompressionType(); c != codec.code {
					t.Fatalf("offset %d: batch compression type %d, want %d (%s): librdkafka sent it uncompressed", r.Offset, c, codec.code, codec.name)
				}
				if r.ProducerID < 0 {
					t.Fatalf("offset %d: no producer id: librdkafka did not enable idempotence", r.Offset)
				}
				if len(r.Headers) != 1 || r.Headers[0].Key != "h1" || string(r.Headers[0].Value) != "v1" {
					t.Fatalf("offset %d: headers %v, want h1=v1", r.Offset, r.Headers)
				}
			}
		})
	}
}

// TestOldProduceVersionsRefused sends Produce v0-2, which the broker lists in ApiVersions only for
// librdkafka's feature checks: each is answered UNSUPPORTED_VERSION per partition, as Kafka 4.0 does,
// and nothing is appended.
func TestOldProduceVersionsRefused(t *testing.T) {
	b := startBroker(t)
	const topic = "old-produce"
	b.createTopic(topic, 1, nil)
	for v := int16(0); v <= 2; v++ {
		req := kmsg.NewPtrProduceRequest()
		req.Version, req.Acks, req.TimeoutMillis = v, -1, 5000
		rt := kmsg.NewProduceRequestTopic()
		rt.Topic = topic
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Records = kafkatest.Batch([]byte("old"))
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		rawRoundTrip(t, b.Addr, req, resp)
		if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
			t.Fatalf("Produce v%d: response %+v", v, resp)
		}
		if code := resp.Topics[0].Partitions[0].ErrorCode; code != kerr.UnsupportedVersion.Code {
			t.Fatalf("Produce v%d: error %d, want UNSUPPORTED_VERSION (%d)", v, code, kerr.UnsupportedVersion.Code)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ends, err := b.admin().ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := ends.Lookup(topic, 0); o.Offset != 0 {
		t.Fatalf("end offset %d after refused produces, want 0", o.Offset)
	}
}

// rawRoundTrip sends req at its own version (req.Version, whatever the broker advertises) on a new
// connection and decodes the answer into resp (set to the same version).
func rawRoundTrip(t testing.TB, addr string, req kmsg.Request, resp kmsg.Response) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if err := kafkawire.Exchange(c, "raw-test", 42, req, resp); err != nil {
		t.Fatalf("%s v%d: %v", kmsg.NameForKey(req.Key()), req.GetVersion(), err)
	}
}
