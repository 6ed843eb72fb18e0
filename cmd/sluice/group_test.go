package main

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
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
// offsets reach the end and DescribeGroups/ListGroups see the group.
func TestGroupFranzSmoke(t *testing.T) {
	b := startBroker(t)
	b.createTopic("smoke", 3, nil)
	produceN(t, b, "smoke", 0, 300)
	cl := b.client(kgo.ConsumerGroup("smoke-g"), kgo.ConsumeTopics("smoke"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit())
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
}
