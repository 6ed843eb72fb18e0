package main

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestTopicAdmin drives the topic and config APIs through kadm: create with configs, describe, alter
// (incremental and whole), grow partitions, list offsets, delete, and auto-creation on metadata.
func TestTopicAdmin(t *testing.T) {
	b := startBroker(t, "--partitions", "2")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	adm := b.admin()

	resp, err := adm.CreateTopic(ctx, 3, 1, map[string]*string{"retention.ms": strPtr("3600000")}, "admin")
	if err != nil || resp.Err != nil {
		t.Fatalf("create: %v %v", err, resp.Err)
	}
	if resp.NumPartitions != 3 || resp.ReplicationFactor != 1 {
		t.Fatalf("create answered %d partitions rf %d", resp.NumPartitions, resp.ReplicationFactor)
	}
	if _, err := adm.CreateTopic(ctx, 1, 3, nil, "too-replicated"); !errors.Is(err, kerr.InvalidReplicationFactor) {
		t.Fatalf("rf 3 on one broker: %v, want INVALID_REPLICATION_FACTOR", err)
	}
	if _, err := adm.CreateTopic(ctx, 1, 1, map[string]*string{"cleanup.policy": strPtr("compact,archive")}, "compacted"); !errors.Is(err, kerr.InvalidConfig) {
		t.Fatalf("cleanup.policy=compact,archive: %v, want INVALID_CONFIG", err)
	}
	if _, err := adm.CreateTopic(ctx, 1, 1, map[string]*string{"retention.ms": strPtr("soon")}, "bad-config"); !errors.Is(err, kerr.InvalidConfig) {
		t.Fatalf("retention.ms=soon: %v, want INVALID_CONFIG", err)
	}

	configValue := func(name string) (string, string) {
		t.Helper()
		rcs, err := adm.DescribeTopicConfigs(ctx, "admin")
		if err != nil {
			t.Fatal(err)
		}
		rc, err := rcs.On("admin", nil)
		if err != nil || rc.Err != nil {
			t.Fatalf("describe configs: %v %v", err, rc.Err)
		}
		for _, c := range rc.Configs {
			if c.Key == name {
				return c.MaybeValue(), c.Source.String()
			}
		}
		t.Fatalf("config %s not described", name)
		return "", ""
	}
	if v, src := configValue("retention.ms"); v != "3600000" || src != "DYNAMIC_TOPIC_CONFIG" {
		t.Fatalf("retention.ms = %s (%s), want 3600000 set on the topic", v, src)
	}
	if v, src := configValue("max.message.bytes"); v != "1048588" || src != "DEFAULT_CONFIG" {
		t.Fatalf("max.message.bytes = %s (%s), want the default 1048588", v, src)
	}

	// Incremental alter: set one, delete another.
	alter, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{
		{Op: kadm.SetConfig, Name: "segment.bytes", Value: strPtr("1048576")},
		{Op: kadm.DeleteConfig, Name: "retention.ms"},
	}, "admin")
	if err != nil || alter[0].Err != nil {
		t.Fatalf("incremental alter: %v %+v", err, alter)
	}
	if v, _ := configValue("segment.bytes"); v != "1048576" {
		t.Fatalf("segment.bytes after alter = %s", v)
	}
	if _, src := configValue("retention.ms"); src != "DEFAULT_CONFIG" {
		t.Fatalf("retention.ms after delete comes from %s, want DEFAULT_CONFIG", src)
	}
	bad, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "no.such.config", Value: strPtr("1")}}, "admin")
	if err == nil {
		err = bad[0].Err
	}
	if !errors.Is(err, kerr.InvalidConfig) {
		t.Fatalf("unknown config: %v, want INVALID_CONFIG", err)
	}
	// Whole-set alter (AlterConfigs): replaces everything explicit.
	whole, err := adm.AlterTopicConfigsState(ctx, []kadm.AlterConfig{{Name: "max.message.bytes", Value: strPtr("2000")}}, "admin")
	if err != nil || whole[0].Err != nil {
		t.Fatalf("alter configs: %v %+v", err, whole)
	}
	if v, src := configValue("segment.bytes"); src != "DEFAULT_CONFIG" || v == "1048576" {
		t.Fatalf("segment.bytes after a whole-set alter = %s (%s), want the default", v, src)
	}
	cl := b.client(kgo.ProducerBatchMaxBytes(1 << 20))
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "admin", Partition: 0, Value: randomBytes(3000)}).FirstErr(); !errors.Is(err, kerr.MessageTooLarge) {
		t.Fatalf("3000 B record with max.message.bytes=2000: %v, want MESSAGE_TOO_LARGE", err)
	}

	// Grow partitions; shrinking is refused.
	if _, err := adm.CreatePartitions(ctx, 2, "admin"); err != nil {
		t.Fatalf("add 2 partitions: %v", err)
	}
	td, err := adm.ListTopics(ctx, "admin")
	if err != nil || len(td["admin"].Partitions) != 5 {
		t.Fatalf("after adding partitions: %v %+v", err, td["admin"])
	}
	if r, err := adm.UpdatePartitions(ctx, 4, "admin"); err == nil && r["admin"].Err == nil {
		t.Fatal("shrinking to 4 partitions was accepted")
	}

	// ListOffsets: earliest, latest and by time on the new partition 4.
	base := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	var recs []*kgo.Record
	for i := 0; i < 10; i++ {
		recs = append(recs, &kgo.Record{Topic: "admin", Partition: 4, Value: []byte("v"), Timestamp: base.Add(time.Duration(i) * time.Second)})
	}
	manual := b.client(kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err := manual.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	starts, err := adm.ListStartOffsets(ctx, "admin")
	if err != nil {
		t.Fatal(err)
	}
	ends, err := adm.ListEndOffsets(ctx, "admin")
	if err != nil {
		t.Fatal(err)
	}
	s4, _ := starts.Lookup("admin", 4)
	e4, _ := ends.Lookup("admin", 4)
	if s4.Offset != 0 || e4.Offset != 10 {
		t.Fatalf("partition 4: start %d end %d, want 0 and 10", s4.Offset, e4.Offset)
	}
	byTime, err := adm.ListOffsetsAfterMilli(ctx, base.Add(4500*time.Millisecond).UnixMilli(), "admin")
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := byTime.Lookup("admin", 4); o.Offset != 5 {
		t.Fatalf("first offset at or after t+4.5s = %d, want 5", o.Offset)
	}

	// Auto-creation through metadata, with the broker's default partition count.
	auto := b.client(kgo.AllowAutoTopicCreation())
	if err := auto.ProduceSync(ctx, &kgo.Record{Topic: "auto-created", Value: []byte("x")}).FirstErr(); err != nil {
		t.Fatalf("produce to an auto-created topic: %v", err)
	}
	td, err = adm.ListTopics(ctx, "auto-created")
	if err != nil || len(td["auto-created"].Partitions) != 2 {
		t.Fatalf("auto-created topic: %v %+v", err, td["auto-created"])
	}

	// Delete: gone from metadata, unknown to produce.
	if _, err := adm.DeleteTopic(ctx, "admin"); err != nil {
		t.Fatalf("delete: %v", err)
	}
	td, err = adm.ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if td.Has("admin") {
		t.Fatal("deleted topic still listed")
	}
	if _, err := adm.DeleteTopic(ctx, "admin"); !errors.Is(err, kerr.UnknownTopicOrPartition) {
		t.Fatalf("deleting twice: %v, want UNKNOWN_TOPIC_OR_PARTITION", err)
	}
	// A topic of the same name can be created again, empty.
	b.createTopic("admin", 1, nil)
	// A fresh client: adm's cached metadata (kept a few seconds) still says the topic is unknown.
	ends, err = b.admin().ListEndOffsets(ctx, "admin")
	if err != nil {
		t.Fatal(err)
	}
	if e, _ := ends.Lookup("admin", 0); e.Offset != 0 {
		t.Fatalf("re-created topic starts at end offset %d", e.Offset)
	}

	// DescribeCluster through kadm.
	meta, err := adm.BrokerMetadata(ctx)
	if err != nil || len(meta.Brokers) != 1 || meta.Brokers[0].NodeID != 1 || meta.Cluster == "" {
		t.Fatalf("broker metadata: %v %+v", err, meta)
	}
}

// TestRestartKeepsProducerState restarts the broker gracefully under one idempotent producer: the same
// producer id continues its sequence after the restart without OUT_OF_ORDER_SEQUENCE_NUMBER, and
// nothing is duplicated.
func TestRestartKeepsProducerState(t *testing.T) {
	b := startBroker(t)
	b.createTopic("restart", 1, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	prod := b.client()
	var sent []*kgo.Record
	for round := 0; round < 3; round++ {
		for i := 0; i < 100; i++ {
			r := &kgo.Record{Topic: "restart", Value: []byte(fmt.Sprintf("%d-%d", round, i)), Timestamp: time.UnixMilli(int64(1700000000000 + len(sent)))}
			sent = append(sent, r)
			if err := prod.ProduceSync(ctx, r).FirstErr(); err != nil {
				t.Fatalf("round %d record %d: %v", round, i, err)
			}
		}
		b.stop()
		b.start()
	}
	checkRecords(t, sent, consumeAll(t, b, "restart"))
}
