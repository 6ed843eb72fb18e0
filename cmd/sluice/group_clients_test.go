package main

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// saramaHandler records every message it is given and marks it for the auto-committer.
type saramaHandler struct {
	name string
	mu   *sync.Mutex
	seen map[string]int
	got  map[string]int // member -> messages
}

func (h *saramaHandler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (h *saramaHandler) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (h *saramaHandler) ConsumeClaim(s sarama.ConsumerGroupSession, c sarama.ConsumerGroupClaim) error {
	for m := range c.Messages() {
		h.mu.Lock()
		h.seen[string(m.Value)]++
		h.got[h.name]++
		h.mu.Unlock()
		s.MarkMessage(m, "")
	}
	return nil
}

// TestGroupSarama: a sarama consumer group (range assignor) of one member consumes, a second member
// joins and the partitions are split; every record is consumed and the committed offsets reach the end.
func TestGroupSarama(t *testing.T) {
	b := startBroker(t)
	const topic, groupID = "sarama-g", "sarama-group"
	b.createTopic(topic, 4, nil)
	produceN(t, b, topic, 0, 400)

	cfg := sarama.NewConfig()
	cfg.Version = sarama.V3_6_0_0
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	cfg.Consumer.Offsets.AutoCommit.Interval = 100 * time.Millisecond
	cfg.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{sarama.NewBalanceStrategyRange()}
	cfg.Consumer.Group.Heartbeat.Interval = 300 * time.Millisecond
	cfg.Consumer.Group.Session.Timeout = 6 * time.Second
	cfg.Consumer.MaxWaitTime = 100 * time.Millisecond

	var mu sync.Mutex
	seen, got := map[string]int{}, map[string]int{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	start := func(name string) sarama.ConsumerGroup {
		cg, err := sarama.NewConsumerGroup([]string{b.Addr}, groupID, cfg)
		if err != nil {
			t.Fatal(err)
		}
		h := &saramaHandler{name: name, mu: &mu, seen: seen, got: got}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if err := cg.Consume(ctx, []string{topic}, h); err != nil && !errors.Is(err, sarama.ErrClosedConsumerGroup) {
					t.Logf("%s: consume: %v", name, err)
					time.Sleep(100 * time.Millisecond)
				}
			}
		}()
		return cg
	}
	waitSeen := func(n int) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			mu.Lock()
			l := len(seen)
			mu.Unlock()
			if l >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("consumed %d of %d distinct records", l, n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	a := start("a")
	waitSeen(400)
	bb := start("b")
	// Wait until the second member owns partitions, then produce more: both consume.
	deadline := time.Now().Add(60 * time.Second)
	for {
		dg, err := b.admin().DescribeGroups(ctx, groupID)
		if err == nil && dg[groupID].State == "Stable" && len(dg[groupID].Members) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("second member never joined: %v %v", dg, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	produceN(t, b, topic, 400, 400)
	waitSeen(800)
	time.Sleep(300 * time.Millisecond) // one more auto-commit interval
	cancel()
	a.Close()
	bb.Close()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if got["b"] == 0 {
		t.Errorf("member b consumed nothing after the rebalance: %v", got)
	}
	committedEqualsEnd(t, b, groupID, topic)
}

// TestGroupKafkaGo: segmentio/kafka-go's Reader with a GroupID (FindCoordinator, Heartbeat, SyncGroup,
// LeaveGroup v0, OffsetCommit v2, OffsetFetch v1) reads and commits; a second reader of the group
// resumes where the first committed.
func TestGroupKafkaGo(t *testing.T) {
	b := startBroker(t)
	const topic, groupID = "kafkago-g", "kafkago-group"
	b.createTopic(topic, 2, nil)
	produceN(t, b, topic, 0, 200)
	read := func(n int) map[string]bool {
		t.Helper()
		r := kafka.NewReader(kafka.ReaderConfig{
			Brokers: []string{b.Addr}, GroupID: groupID, Topic: topic,
			MaxWait: 100 * time.Millisecond, StartOffset: kafka.FirstOffset,
			HeartbeatInterval: 300 * time.Millisecond, SessionTimeout: 6 * time.Second,
			RebalanceTimeout: 5 * time.Second, JoinGroupBackoff: 100 * time.Millisecond,
		})
		defer r.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		out := map[string]bool{}
		for len(out) < n {
			m, err := r.ReadMessage(ctx) // commits synchronously (CommitInterval 0)
			if err != nil {
				t.Fatalf("read after %d of %d: %v", len(out), n, err)
			}
			out[string(m.Value)] = true
		}
		return out
	}
	first := read(200)
	committedEqualsEnd(t, b, groupID, topic)
	produceN(t, b, topic, 200, 100)
	second := read(100)
	for v := range second {
		if first[v] {
			t.Errorf("record %s read again after its offset was committed", v)
		}
	}
	committedEqualsEnd(t, b, groupID, topic)
}

// TestGroupKcat: librdkafka's balanced consumer (kcat -G) reads a topic to its end and commits.
func TestGroupKcat(t *testing.T) {
	kcat := requireKcat(t)
	b := startBroker(t)
	const topic, groupID = "kcat-g", "kcat-group"
	b.createTopic(topic, 3, nil)
	produceN(t, b, topic, 0, 300)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, kcat, "-b", b.Addr, "-G", groupID, "-o", "beginning", "-e", "-f", "%s\n",
		"-X", "auto.commit.interval.ms=100", topic)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kcat -G: %v\n%s\n%s", err, out, stderr.String())
	}
	got := map[string]bool{}
	for _, l := range lines(string(out)) {
		got[strings.TrimSpace(l)] = true
	}
	if len(got) != 300 {
		t.Fatalf("kcat -G consumed %d distinct records, want 300", len(got))
	}
	dg, err := b.admin().DescribeGroups(ctx, groupID)
	if err != nil {
		t.Fatal(err)
	}
	if g := dg[groupID]; g.State != "Empty" {
		t.Errorf("after kcat left, group state %s, want Empty", g.State)
	}
	committedEqualsEnd(t, b, groupID, topic) // librdkafka commits on close
}

// TestGroupRestart: committed offsets (a group's and a standalone consumer's) survive kill -9 and a
// restart, and the group resumes where it committed.
func TestGroupRestart(t *testing.T) {
	b := startBroker(t)
	const topic, groupID = "restart-g", "restart-group"
	b.createTopic(topic, 3, nil)
	produceN(t, b, topic, 0, 300)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	consume := func(n int) map[string]bool {
		t.Helper()
		cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr), kgo.ConsumerGroup(groupID), kgo.ConsumeTopics(topic),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit())
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		out := map[string]bool{}
		for len(out) < n {
			fs := cl.PollFetches(ctx)
			if ctx.Err() != nil {
				t.Fatalf("consumed %d of %d", len(out), n)
			}
			fs.EachRecord(func(r *kgo.Record) { out[string(r.Value)] = true })
			if err := cl.CommitUncommittedOffsets(ctx); err != nil {
				t.Fatalf("commit: %v", err)
			}
		}
		if len(out) != n {
			t.Fatalf("consumed %d records, want %d", len(out), n)
		}
		return out
	}
	first := consume(300)

	// A standalone consumer (generation -1, no member id) commits without joining.
	adm := b.admin()
	standalone := kadm.Offsets{}
	standalone.Add(kadm.Offset{Topic: topic, Partition: 1, At: 7, LeaderEpoch: -1, Metadata: "standalone"})
	resp, err := adm.CommitOffsets(ctx, "standalone-group", standalone)
	if err != nil || resp.Error() != nil {
		t.Fatalf("standalone commit: %v %v", err, resp.Error())
	}

	b.kill9()
	b.start()

	committedEqualsEnd(t, b, groupID, topic)
	adm = b.admin()
	offs, err := adm.FetchOffsets(ctx, "standalone-group")
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := offs.Lookup(topic, 1); !ok || o.At != 7 || o.Metadata != "standalone" {
		t.Errorf("standalone offset after restart: %+v %v", o, ok)
	}
	groups, err := adm.ListGroups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(groups) != 2 {
		t.Errorf("groups after restart: %v", groups.Groups())
	}

	produceN(t, b, topic, 300, 90)
	second := consume(90)
	for v := range second {
		if first[v] {
			t.Errorf("record %s consumed again after restart although committed", v)
		}
	}
}
