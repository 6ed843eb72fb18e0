package quorum

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParseVoters(t *testing.T) {
	got, err := ParseVoters(" 1@127.0.0.1:9093, 2@broker-2:9093,3@[::1]:9093")
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint64]string{1: "127.0.0.1:9093", 2: "broker-2:9093", 3: "[::1]:9093"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for _, bad := range []string{"", "1", "0@h:1", "x@h:1", "1@h", "1@:1", "1@h:1,1@h:2", "1@h:"} {
		if _, err := ParseVoters(bad); err == nil {
			t.Errorf("ParseVoters(%q) accepted", bad)
		}
	}
}

func startSingleController(t *testing.T, dir, addr string) (*Host, *Controller) {
	t.Helper()
	h := newTestHost(t, 1, addr, filepath.Join(dir, "raft"))
	c, err := h.StartController(map[uint64]string{1: addr}, false)
	if err != nil {
		h.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		h.Close()
		t.Fatal(err)
	}
	return h, c
}

func TestControllerSingleNode(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	h, c := startSingleController(t, dir, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	md := c.Metadata()
	if len(md.ClusterID) != 22 {
		t.Fatalf("cluster id %q", md.ClusterID)
	}
	if _, err := c.CreateTopic(ctx, TopicSpec{Name: "t", Partitions: 1, ReplicationFactor: 1}); !errors.Is(err, ErrInvalidReplicationFactor) {
		t.Fatalf("create with no brokers: %v", err)
	}
	changed := c.Changed()
	if err := c.RegisterBroker(ctx, BrokerInfo{NodeID: 1, Host: "127.0.0.1", Port: 9092, RaftAddr: addr}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	default:
		t.Fatal("Changed not closed by RegisterBroker")
	}
	if b := c.Metadata().Brokers[1]; b.Port != 9092 || b.RaftAddr != addr {
		t.Fatalf("broker %+v", b)
	}

	tm, err := c.CreateTopic(ctx, TopicSpec{Name: "orders", Partitions: 3, ReplicationFactor: 1, Configs: map[string]string{"retention.ms": "1000"}})
	if err != nil {
		t.Fatal(err)
	}
	if tm.ID == ([16]byte{}) || len(tm.Partitions) != 3 || tm.Configs["retention.ms"] != "1000" {
		t.Fatalf("topic %+v", tm)
	}
	for i, p := range tm.Partitions {
		if p.Partition != int32(i) || p.ShardID != FirstPartitionShardID+uint64(i) || !reflect.DeepEqual(p.Replicas, []int32{1}) {
			t.Fatalf("partition %d: %+v", i, p)
		}
	}
	if _, err := c.CreateTopic(ctx, TopicSpec{Name: "orders", Partitions: 1, ReplicationFactor: 1}); !errors.Is(err, ErrTopicExists) {
		t.Fatalf("duplicate create: %v", err)
	}
	if _, err := c.CreateTopic(ctx, TopicSpec{Name: "x", Partitions: 0, ReplicationFactor: 1}); !errors.Is(err, ErrInvalidPartitions) {
		t.Fatalf("zero partitions: %v", err)
	}
	if _, err := c.CreateTopic(ctx, TopicSpec{Name: "x", Partitions: 1, ReplicationFactor: 2}); !errors.Is(err, ErrInvalidReplicationFactor) {
		t.Fatalf("rf 2 with one broker: %v", err)
	}
	if _, err := c.CreateTopic(ctx, TopicSpec{Name: "", Partitions: 1, ReplicationFactor: 1}); err == nil {
		t.Fatal("empty name accepted")
	}

	if err := c.CreatePartitions(ctx, "orders", 5, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.CreatePartitions(ctx, "orders", 4, nil); !errors.Is(err, ErrInvalidPartitions) {
		t.Fatalf("shrink: %v", err)
	}
	if err := c.CreatePartitions(ctx, "nope", 4, nil); !errors.Is(err, ErrUnknownTopic) {
		t.Fatalf("grow unknown: %v", err)
	}
	if err := c.AlterTopicConfig(ctx, "orders", map[string]string{"cleanup.policy": "compact"}, []string{"retention.ms"}); err != nil {
		t.Fatal(err)
	}
	if err := c.AlterTopicConfig(ctx, "nope", nil, nil); !errors.Is(err, ErrUnknownTopic) {
		t.Fatalf("alter unknown: %v", err)
	}
	if _, err := c.CreateTopic(ctx, TopicSpec{Name: "gone", Partitions: 2, ReplicationFactor: 1}); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteTopic(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteTopic(ctx, "gone"); !errors.Is(err, ErrUnknownTopic) {
		t.Fatalf("delete twice: %v", err)
	}
	// Old snapshots stay as they were (immutability).
	if md.ClusterID == "" || len(md.Topics) != 0 {
		t.Fatalf("an old Metadata changed: %+v", md)
	}

	seen := map[int64]bool{}
	allocate := func(n int) {
		t.Helper()
		first, err := c.AllocateProducerIDs(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		for id := first; id < first+int64(n); id++ {
			if seen[id] {
				t.Fatalf("producer id %d handed out twice", id)
			}
			seen[id] = true
		}
	}
	allocate(1000)
	allocate(1)
	if _, err := c.AllocateProducerIDs(ctx, 0); err == nil {
		t.Fatal("empty block accepted")
	}

	before := c.Metadata()
	o := before.Topics["orders"]
	if len(o.Partitions) != 5 || o.Partitions[4].ShardID != FirstPartitionShardID+4 || o.Configs["cleanup.policy"] != "compact" || o.Configs["retention.ms"] != "" {
		t.Fatalf("orders %+v", o)
	}
	if before.NextShardID != FirstPartitionShardID+7 {
		t.Fatalf("next shard id %d: the deleted topic's ids must stay used", before.NextShardID)
	}
	h.Close()

	// Restart: metadata comes back; producer ids continue past every block handed out.
	h, c = startSingleController(t, dir, addr)
	defer h.Close()
	after := c.Metadata()
	if after.ClusterID != before.ClusterID || after.Version != before.Version || !reflect.DeepEqual(after.Topics, before.Topics) || !reflect.DeepEqual(after.Brokers, before.Brokers) {
		t.Fatalf("metadata after restart\n%+v\nbefore\n%+v", after, before)
	}
	allocate(10)
	tm2, err := c.CreateTopic(ctx, TopicSpec{Name: "later", Partitions: 1, ReplicationFactor: 1})
	if err != nil {
		t.Fatal(err)
	}
	if tm2.Partitions[0].ShardID != FirstPartitionShardID+7 {
		t.Fatalf("shard id after restart %d", tm2.Partitions[0].ShardID)
	}
}

// TestControllerThreeNodes runs three Hosts in one process on loopback: they agree on metadata,
// and the controller keeps working after one node stops.
func TestControllerThreeNodes(t *testing.T) {
	dir := t.TempDir()
	voters := map[uint64]string{}
	for id := uint64(1); id <= 3; id++ {
		voters[id] = freeAddr(t)
	}
	var spec []string
	for id := uint64(1); id <= 3; id++ {
		spec = append(spec, fmt.Sprintf("%d@%s", id, voters[id]))
	}
	parsed, err := ParseVoters(strings.Join(spec, ","))
	if err != nil {
		t.Fatal(err)
	}
	hosts := map[uint64]*Host{}
	ctrls := map[uint64]*Controller{}
	for id := uint64(1); id <= 3; id++ {
		h := newTestHost(t, id, parsed[id], filepath.Join(dir, fmt.Sprint(id)))
		defer h.Close()
		c, err := h.StartController(parsed, false)
		if err != nil {
			t.Fatal(err)
		}
		hosts[id], ctrls[id] = h, c
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for id, c := range ctrls {
		if err := c.WaitReady(ctx); err != nil {
			t.Fatalf("node %d: %v", id, err)
		}
	}
	for id := uint64(1); id <= 3; id++ {
		// Each node registers itself through its own replica: followers' proposals are forwarded.
		if err := ctrls[id].RegisterBroker(ctx, BrokerInfo{NodeID: int32(id), Host: "127.0.0.1", Port: 9092 + int32(id), RaftAddr: voters[id]}); err != nil {
			t.Fatalf("register %d: %v", id, err)
		}
	}
	tm, err := ctrls[2].CreateTopic(ctx, TopicSpec{Name: "replicated", Partitions: 6, ReplicationFactor: 3})
	if err != nil {
		t.Fatal(err)
	}
	leaders := map[int32]int{}
	for _, p := range tm.Partitions {
		if len(p.Replicas) != 3 {
			t.Fatalf("partition %+v", p)
		}
		leaders[p.Replicas[0]]++
	}
	if len(leaders) != 3 || leaders[1] != 2 || leaders[2] != 2 || leaders[3] != 2 {
		t.Fatalf("preferred leaders not spread evenly: %v", leaders)
	}
	waitAgree(t, ctx, ctrls)

	// Stop the leader: the other two elect a new one and keep accepting changes.
	var leader uint64
	for leader == 0 {
		for id, h := range hosts {
			if h.IsLeader(ControllerShardID) {
				leader = id
			}
		}
		if ctx.Err() != nil {
			t.Fatal("no controller leader")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("closing leader %d", leader)
	hosts[leader].Close()
	delete(ctrls, leader)
	var survivor *Controller
	for _, c := range ctrls {
		survivor = c
	}
	if _, err := survivor.CreateTopic(ctx, TopicSpec{Name: "after-failover", Partitions: 2, ReplicationFactor: 2}); err != nil {
		t.Fatal(err)
	}
	first, err := survivor.AllocateProducerIDs(ctx, 100)
	if err != nil || first < 1 {
		t.Fatalf("allocate after failover: %d, %v", first, err)
	}
	waitAgree(t, ctx, ctrls)
	if newLeader, ok := survivor.Leader(); !ok || newLeader == leader {
		t.Fatalf("leader after failover: %d %v", newLeader, ok)
	}
}

// waitAgree waits until every controller has applied the same metadata version, then compares.
func waitAgree(t *testing.T, ctx context.Context, ctrls map[uint64]*Controller) {
	t.Helper()
	var wg sync.WaitGroup
	var want uint64
	for _, c := range ctrls {
		want = max(want, c.Metadata().Version)
	}
	for _, c := range ctrls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c.Metadata().Version < want {
				select {
				case <-c.Changed():
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	wg.Wait()
	var ref *Metadata
	for id, c := range ctrls {
		md := c.Metadata()
		if ref == nil {
			ref = md
			continue
		}
		if md.Version != ref.Version || md.ClusterID != ref.ClusterID || !reflect.DeepEqual(md.Topics, ref.Topics) ||
			!reflect.DeepEqual(md.Brokers, ref.Brokers) || md.NextProducerID != ref.NextProducerID {
			t.Fatalf("node %d disagrees:\n%+v\n%+v", id, md, ref)
		}
	}
}

// TestControllerManualAssignment: CreateTopic and CreatePartitions with replica lists place partitions as
// given and refuse what Kafka refuses (unknown brokers, a broker twice, uneven replica counts).
func TestControllerManualAssignment(t *testing.T) {
	addr := freeAddr(t)
	h, c := startSingleController(t, t.TempDir(), addr)
	defer h.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.RegisterBroker(ctx, BrokerInfo{NodeID: 1, Host: "127.0.0.1", Port: 9092, RaftAddr: addr}); err != nil {
		t.Fatal(err)
	}
	// Manual replica assignments: placed as given, validated as Kafka does.
	if tm, err := c.CreateTopic(ctx, TopicSpec{Name: "placed", Assignment: [][]int32{{1}, {1}}}); err != nil || len(tm.Partitions) != 2 || tm.Partitions[1].Replicas[0] != 1 {
		t.Fatalf("manual assignment: %+v %v", tm, err)
	}
	for _, a := range [][][]int32{{{2}}, {{1, 1}}, {{1}, {}}} {
		if _, err := c.CreateTopic(ctx, TopicSpec{Name: "misplaced", Assignment: a}); !errors.Is(err, ErrInvalidReplicas) {
			t.Fatalf("assignment %v: %v, want ErrInvalidReplicas", a, err)
		}
	}
	if err := c.CreatePartitions(ctx, "placed", 3, [][]int32{{1}}); err != nil {
		t.Fatal(err)
	}
	if err := c.CreatePartitions(ctx, "placed", 5, [][]int32{{1}}); !errors.Is(err, ErrInvalidReplicas) {
		t.Fatalf("one replica list for two new partitions: %v", err)
	}
}
