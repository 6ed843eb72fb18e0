package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestDescribeLogDirsAndBrokerConfigs asks what kafbat-ui, Cruise Control and kafka-log-dirs.sh ask:
// the log directory with each partition's size and the disk's, and the broker configs they read.
func TestDescribeLogDirsAndBrokerConfigs(t *testing.T) {
	b := startBroker(t)
	const topic = "logdirs"
	b.createTopic(topic, 2, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl := b.client(kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for i := range 10 {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: 0, Value: []byte(fmt.Sprint("value ", i))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	adm := b.admin()
	dirs, err := adm.DescribeBrokerLogDirs(ctx, 1, nil)
	if err != nil || dirs.Error() != nil {
		t.Fatalf("DescribeLogDirs: %v %v", err, dirs.Error())
	}
	if len(dirs) != 1 {
		t.Fatalf("%d log dirs, want 1", len(dirs))
	}
	for _, d := range dirs {
		if !strings.HasSuffix(d.Dir, "logs") || d.TotalBytes <= 0 || d.UsableBytes <= 0 || d.UsableBytes > d.TotalBytes {
			t.Fatalf("log dir %q: total %d, usable %d", d.Dir, d.TotalBytes, d.UsableBytes)
		}
	}
	p0, ok0 := dirs.LookupPartition(topic, 0)
	p1, ok1 := dirs.LookupPartition(topic, 1)
	if !ok0 || !ok1 {
		t.Fatalf("partitions of %s missing from the log dir", topic)
	}
	if p0.Size <= 0 || p1.Size != 0 {
		t.Fatalf("sizes: partition 0 %d (10 records), partition 1 %d (none)", p0.Size, p1.Size)
	}
	only, err := adm.DescribeBrokerLogDirs(ctx, 1, kadm.TopicsSet{topic: {1: {}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := only.LookupPartition(topic, 0); ok {
		t.Fatal("a described partition that was not asked for")
	}

	rcs, err := adm.DescribeBrokerConfigs(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := rcs.On("1", nil)
	if err != nil || rc.Err != nil {
		t.Fatalf("broker configs: %v %v", err, rc.Err)
	}
	got := map[string]string{}
	for _, c := range rc.Configs {
		if c.Value != nil {
			got[c.Key] = *c.Value
		}
	}
	for _, k := range []string{"inter.broker.protocol.version", "log.dirs", "log.message.format.version", "advertised.listeners", "min.insync.replicas"} {
		if got[k] == "" {
			t.Errorf("broker config %s missing (have %d configs)", k, len(got))
		}
	}
	if !strings.HasSuffix(got["log.dirs"], "logs") {
		t.Errorf("log.dirs = %q", got["log.dirs"])
	}

	// Asked by name, only those come back.
	req := kmsg.NewPtrDescribeConfigsRequest()
	r := kmsg.NewDescribeConfigsRequestResource()
	r.ResourceType, r.ResourceName, r.ConfigNames = kmsg.ConfigResourceTypeBroker, "1", []string{"inter.broker.protocol.version"}
	req.Resources = append(req.Resources, r)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	if cs := resp.Resources[0].Configs; len(cs) != 1 || cs[0].Name != "inter.broker.protocol.version" {
		t.Fatalf("configs asked by name: %+v", cs)
	}
}

// TestElectLeadersOneBroker: a partition led by its preferred replica needs no election, unclean
// elections are refused, unknown partitions say so.
func TestElectLeadersOneBroker(t *testing.T) {
	b := startBroker(t)
	const topic = "elect1"
	b.createTopic(topic, 1, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	adm := b.admin()
	for _, how := range []kadm.ElectLeadersHow{kadm.ElectPreferredReplica, kadm.ElectLiveReplica} {
		res, err := adm.ElectLeaders(ctx, how, kadm.TopicsSet{topic: {0: {}, 5: {}}})
		if err != nil {
			t.Fatal(err)
		}
		if err := res[topic][0].Err; !errors.Is(err, kerr.ElectionNotNeeded) {
			t.Fatalf("election %v of a led partition: %v, want ELECTION_NOT_NEEDED", how, err)
		}
		if err := res[topic][5].Err; !errors.Is(err, kerr.UnknownTopicOrPartition) {
			t.Fatalf("election %v of partition 5 of 1: %v, want UNKNOWN_TOPIC_OR_PARTITION", how, err)
		}
	}
}

// TestClusterElectLeaders has a partition led by another replica than its preferred one (the first
// election's choice, or a restart of the preferred one; automatic rebalancing is off), then asks for
// a preferred election: the preferred replica leads.
func TestClusterElectLeaders(t *testing.T) {
	c := startCluster(t, 3, "--leader-rebalance-interval", "1h")
	const topic = "elect3"
	c.createTopic(topic, 1, 3, nil)
	parts, err := c.partitions(topic)
	if err != nil {
		t.Fatal(err)
	}
	preferred := parts[0].Replicas[0]
	if c.leaderOf(topic, 0) == preferred {
		b := c.node(preferred)
		b.stop()
		c.waitFor(60*time.Second, "another leader", func() error {
			if l := c.leaderOf(topic, 0); l == preferred {
				return errors.New("still the stopped broker")
			}
			return nil
		})
		b.start()
	}
	c.waitFor(60*time.Second, "a full ISR", func() error {
		parts, err := c.partitions(topic)
		if err != nil {
			return err
		}
		if p := parts[0]; len(p.ISR) != 3 || p.Leader == preferred {
			return fmt.Errorf("isr %v, leader %d", p.ISR, p.Leader)
		}
		return nil
	})
	// Brokers' views of the ISR converge within a heartbeat: PREFERRED_LEADER_NOT_AVAILABLE is
	// retried, as an operator would.
	c.waitFor(30*time.Second, "a preferred election", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		res, err := c.admin().ElectLeaders(ctx, kadm.ElectPreferredReplica, kadm.TopicsSet{topic: {0: {}}})
		if err != nil {
			return err
		}
		if r := res[topic][0]; r.Err != nil && !errors.Is(r.Err, kerr.ElectionNotNeeded) {
			if !errors.Is(r.Err, kerr.PreferredLeaderNotAvailable) {
				t.Fatalf("preferred election: %v %s", r.Err, r.ErrMessage)
			}
			return fmt.Errorf("%v %s", r.Err, r.ErrMessage)
		}
		return nil
	})
	c.waitFor(30*time.Second, "the preferred replica to lead again", func() error {
		if l := c.leaderOf(topic, 0); l != preferred {
			return fmt.Errorf("leader %d, preferred %d", l, preferred)
		}
		return nil
	})
}

// TestDeleteRecords moves a partition's log start offset with kadm's DeleteRecords: ListOffsets,
// Fetch and consumers honour it, a restart keeps it, and an offset past the high watermark is
// refused with OFFSET_OUT_OF_RANGE.
func TestDeleteRecords(t *testing.T) {
	b := startBroker(t)
	const topic = "delete-records"
	b.createTopic(topic, 1, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl := b.client(kgo.ProducerLinger(0))
	for i := range 10 {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte(fmt.Sprint(i))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	del := func(at int64) kadm.DeleteRecordsResponse {
		t.Helper()
		os := kadm.Offsets{}
		os.Add(kadm.Offset{Topic: topic, Partition: 0, At: at})
		resp, err := b.admin().DeleteRecords(ctx, os)
		if err != nil {
			t.Fatal(err)
		}
		r, _ := resp.Lookup(topic, 0)
		return r
	}
	if r := del(4); r.Err != nil || r.LowWatermark != 4 {
		t.Fatalf("DeleteRecords before 4: low watermark %d, %v", r.LowWatermark, r.Err)
	}
	if r := del(100); !errors.Is(r.Err, kerr.OffsetOutOfRange) {
		t.Fatalf("DeleteRecords past the high watermark: %v, want OFFSET_OUT_OF_RANGE", r.Err)
	}
	if r := del(2); r.Err != nil || r.LowWatermark != 4 {
		t.Fatalf("DeleteRecords below the start: low watermark %d, %v (it never moves back)", r.LowWatermark, r.Err)
	}
	check := func(when string) {
		t.Helper()
		starts, err := b.admin().ListStartOffsets(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		if o, _ := starts.Lookup(topic, 0); o.Err != nil || o.Offset != 4 {
			t.Fatalf("%s: start offset %d, %v, want 4", when, o.Offset, o.Err)
		}
		req := kmsg.NewPtrFetchRequest()
		req.MaxWaitMillis, req.MaxBytes, req.SessionEpoch = 10, 1<<20, -1
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic, rt.TopicID = topic, topicID(t, b, topic)
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.FetchOffset, rp.PartitionMaxBytes = 2, 1<<20
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, b.client().Broker(1))
		if err != nil {
			t.Fatal(err)
		}
		if p := resp.Topics[0].Partitions[0]; p.ErrorCode != kerr.OffsetOutOfRange.Code || p.LogStartOffset != 4 && p.LogStartOffset != -1 {
			t.Fatalf("%s: fetch at 2: error %d, log start %d, want OFFSET_OUT_OF_RANGE", when, p.ErrorCode, p.LogStartOffset)
		}
		cons := b.client(kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		var got []int64
		for len(got) == 0 || got[len(got)-1] < 9 {
			fs := cons.PollFetches(ctx)
			if ctx.Err() != nil {
				t.Fatalf("%s: consumed offsets %v before timing out", when, got)
			}
			fs.EachRecord(func(r *kgo.Record) { got = append(got, r.Offset) })
		}
		cons.Close()
		if len(got) != 6 || got[0] != 4 {
			t.Fatalf("%s: consumed offsets %v from the start; want 4 to 9", when, got)
		}
	}
	check("after DeleteRecords")
	b.stop()
	b.start()
	check("after a restart")
}

// TestDeleteRecordsFreesSegments: the segments wholly below a DeleteRecords start offset are removed
// by the next retention pass, so the partition's size (DescribeLogDirs) shrinks.
func TestDeleteRecordsFreesSegments(t *testing.T) {
	b := startBroker(t, "--segment-bytes", "16384", "--retention-check-interval", "200ms")
	const topic = "delete-frees"
	b.createTopic(topic, 1, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cl := b.client(kgo.ProducerLinger(0), kgo.ProducerBatchCompression(kgo.NoCompression()))
	value := []byte(strings.Repeat("x", 1000))
	for range 100 {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: value}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	size := func() int64 {
		t.Helper()
		dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer dcancel()
		dirs, err := b.admin().DescribeBrokerLogDirs(dctx, 1, kadm.TopicsSet{topic: {0: {}}})
		if err != nil {
			t.Fatal(err)
		}
		p, ok := dirs.LookupPartition(topic, 0)
		if !ok {
			t.Fatal("partition not described")
		}
		return p.Size
	}
	before := size()
	os := kadm.Offsets{}
	os.Add(kadm.Offset{Topic: topic, Partition: 0, At: 90})
	resp, err := b.admin().DeleteRecords(ctx, os)
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := resp.Lookup(topic, 0); r.Err != nil || r.LowWatermark != 90 {
		t.Fatalf("DeleteRecords: %+v", r)
	}
	for {
		after := size()
		if after*3 < before {
			t.Logf("partition size %d bytes before DeleteRecords, %d after", before, after)
			return
		}
		if ctx.Err() != nil {
			files, _ := filepath.Glob(filepath.Join(b.DataDir, "logs", topic+"-0", "*"))
			t.Fatalf("partition size %d before, still %d: the segments below the start offset stay; files %v", before, after, files)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
