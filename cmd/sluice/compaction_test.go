package main

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestCompactedTopicRefusesNullKeys: a compacted topic takes keyed records and refuses a batch holding
// a record without a key with INVALID_RECORD (Kafka's), compressed or not; a delete topic takes both.
func TestCompactedTopicRefusesNullKeys(t *testing.T) {
	b := startBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b.createTopic("keyed", 1, map[string]*string{"cleanup.policy": strPtr("compact"), "delete.retention.ms": strPtr("1000"),
		"min.compaction.lag.ms": strPtr("0"), "max.compaction.lag.ms": strPtr("60000"), "min.cleanable.dirty.ratio": strPtr("0.1")})
	b.createTopic("plain", 1, nil)
	for _, codec := range []kgo.CompressionCodec{kgo.NoCompression(), kgo.ZstdCompression()} {
		cl := b.client(kgo.ProducerBatchCompression(codec), kgo.RecordRetries(1))
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "keyed", Key: []byte("k"), Value: []byte("v")}).FirstErr(); err != nil {
			t.Fatalf("keyed record to a compacted topic: %v", err)
		}
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "keyed", Value: []byte("v")}).FirstErr(); !errors.Is(err, kerr.InvalidRecord) {
			t.Fatalf("record without a key to a compacted topic: %v, want INVALID_RECORD", err)
		}
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "plain", Value: []byte("v")}).FirstErr(); err != nil {
			t.Fatalf("record without a key to a delete topic: %v", err)
		}
	}
	if _, err := b.admin().CreateTopic(ctx, 1, 1, map[string]*string{"cleanup.policy": strPtr("compact"), "min.cleanable.dirty.ratio": strPtr("2")}, "bad-ratio"); !errors.Is(err, kerr.InvalidConfig) {
		t.Fatalf("min.cleanable.dirty.ratio=2: %v, want INVALID_CONFIG", err)
	}
}
