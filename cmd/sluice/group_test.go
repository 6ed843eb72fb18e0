package main

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// produceN produces n records with values "0".."n-1" spread over the topic's partitions.
func produceN(t *testing.T, b *testBroker, topic string, from, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	prod := b.client(kgo.ProducerLinger(2 * time.Millisecond))
	recs := make([]*kgo.Record, 0, n)
	for i := from; i < from+n; i++ {
		recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(strconv.Itoa(i)), Value: []byte(strconv.Itoa(i))})
	}
	if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
}

// committedEqualsEnd checks the group's committed offsets equal the topic's end offsets.
func committedEqualsEnd(t *testing.T, b *testBroker, groupID, topic string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	adm := b.admin()
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	offs, err := adm.FetchOffsets(ctx, groupID)
	if err != nil {
		t.Fatal(err)
	}
	ends.Each(func(o kadm.ListedOffset) {
		c, ok := offs.Lookup(topic, o.Partition)
		if o.Offset == 0 && !ok {
			return // nothing to commit
		}
		if !ok || c.At != o.Offset {
			t.Errorf("group %s %s/%d: committed %v (%v), end %d", groupID, topic, o.Partition, c.At, ok, o.Offset)
		}
	})
}

// TestGroupFranzSmoke: one franz-go member consumes a topic from the start and commits; the committed
// offsets reach the end and DescribeGroups/ListGroups see the group; OffsetDelete and DeleteGroups
// refuse while the member is there and work once it left.
func TestGroupFranzSmoke(t *testing.T) {
	b := startBroker(t)
	b.createTopic("smoke", 3, nil)
	produceN(t, b, "smoke", 0, 300)
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr), kgo.ConsumerGroup("smoke-g"), kgo.ConsumeTopics("smoke"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	seen := map[string]bool{}
	for len(seen) < 300 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of 300", len(seen))
		}
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) { seen[string(r.Value)] = true })
		if err := cl.CommitUncommittedOffsets(ctx); err != nil {
			t.Fatalf("commit: %v", err)
		}
	}
	committedEqualsEnd(t, b, "smoke-g", "smoke")
	adm := b.admin()
	ls, err := adm.ListGroups(ctx)
	if err != nil || len(ls) != 1 || ls.Groups()[0] != "smoke-g" {
		t.Fatalf("list groups: %v %v", ls, err)
	}
	dg, err := adm.DescribeGroups(ctx, "smoke-g")
	if err != nil {
		t.Fatal(err)
	}
	if g := dg["smoke-g"]; g.State != "Stable" || len(g.Members) != 1 || g.Protocol != "cooperative-sticky" {
		t.Fatalf("describe: state %s members %d protocol %s err %v", g.State, len(g.Members), g.Protocol, g.Err)
	}

	// While the member is there, the group cannot be deleted, nor its subscribed topic's offsets.
	del, err := adm.DeleteGroup(ctx, "smoke-g")
	if !errors.Is(del.Err, kerr.NonEmptyGroup) { // kadm returns the group's error as err too
		t.Fatalf("delete active group: %v %v", err, del.Err)
	}
	od, err := adm.DeleteOffsets(ctx, "smoke-g", kadm.TopicsSet{"smoke": {0: {}}})
	if !errors.Is(od.Error(), kerr.GroupSubscribedToTopic) {
		t.Fatalf("delete subscribed offsets: %v %v %v %+v", err, od.Error(), od, dg["smoke-g"].Members[0].Join)
	}
	cl.Close() // leaves
	od, err = adm.DeleteOffsets(ctx, "smoke-g", kadm.TopicsSet{"smoke": {0: {}}})
	if err != nil || od.Error() != nil {
		t.Fatalf("delete offsets: %v %v", err, od.Error())
	}
	offs, err := adm.FetchOffsets(ctx, "smoke-g")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := offs.Lookup("smoke", 0); ok {
		t.Fatalf("offset of smoke/0 still there after OffsetDelete")
	}
	if _, ok := offs.Lookup("smoke", 1); !ok {
		t.Fatalf("offset of smoke/1 gone after deleting smoke/0's")
	}
	if del, err = adm.DeleteGroup(ctx, "smoke-g"); err != nil || del.Err != nil {
		t.Fatalf("delete group: %v %v", err, del.Err)
	}
	if ls, err = adm.ListGroups(ctx); err != nil || len(ls) != 0 {
		t.Fatalf("groups after delete: %v %v", ls.Groups(), err)
	}
	// __consumer_offsets is internal and compacted (kept whole until compaction exists).
	cfgs, err := adm.DescribeTopicConfigs(ctx, "__consumer_offsets")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := cfgs.On("__consumer_offsets", nil)
	if err != nil {
		t.Fatal(err)
	}
	policy := ""
	for _, c := range cfg.Configs {
		if c.Key == "cleanup.policy" && c.Value != nil {
			policy = *c.Value
		}
	}
	if policy != "compact" {
		t.Errorf("__consumer_offsets cleanup.policy %q, want compact", policy)
	}
}
