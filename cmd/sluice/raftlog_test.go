package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/config"
	"github.com/lni/dragonboat/v4/plugin/tan"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicebroker/sluice/segment"
)

// Tests of the Raft log store (package raftlog) end to end: the partition's segment
// is its Raft log, so Raft's own rules (an uncommitted suffix overridden by a new leader) reach
// the bytes consumers read.

// diskBatches reads the record batches of a partition directory straight from its segment files,
// read-only (the broker may be running): every whole, CRC-valid batch in offset order, up to the
// first that is not.
func diskBatches(t *testing.T, dir string) [][]byte {
	t.Helper()
	names, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	sort.Strings(names)
	var out [][]byte
	for _, name := range names {
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		for pos := 0; pos+segment.HeaderSize <= len(data); {
			n := int(binary.BigEndian.Uint32(data[pos+8:])) + 12
			if n <= segment.HeaderSize || pos+n > len(data) {
				break
			}
			if _, err := segment.Validate(data[pos : pos+n]); err != nil {
				break
			}
			out = append(out, data[pos:pos+n])
			pos += n
		}
	}
	return out
}

// holds reports whether any batch holds value (uncompressed batches, as the test writes them).
func holds(batches [][]byte, value string) bool {
	for _, b := range batches {
		if bytes.Contains(b, []byte(value)) {
			return true
		}
	}
	return false
}

// A leader cut off with entries its followers never got: the followers elect a new leader and take
// writes; when the old leader returns, its uncommitted suffix leaves its segment and the new
// leader's entries take those offsets. Every replica then holds the same bytes, and no consumer
// ever saw the records that were never acknowledged.
func TestSegmentRaftLogTruncatesUncommittedSuffix(t *testing.T) {
	c := startCluster(t, 3, "--leader-rebalance-interval", "1h")
	const topic = "suffix"
	c.createTopic(topic, 1, 3, nil)
	partDir := func(id int32) string { return filepath.Join(c.node(id).DataDir, "logs", topic+"-0") }

	cl := c.client(kgo.RequiredAcks(kgo.AllISRAcks()), kgo.DisableIdempotentWrite())
	var acked []string
	produce := func(cl *kgo.Client, prefix string, n int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		for i := range n {
			v := fmt.Sprintf("%s-%d", prefix, i)
			if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte(v)}).FirstErr(); err != nil {
				t.Fatalf("produce %s: %v", v, err)
			}
			acked = append(acked, v)
		}
	}
	produce(cl, "before", 20)

	old := c.leaderOf(topic, 0)
	var followers []int32
	for id := int32(1); id <= 3; id++ {
		if id != old {
			followers = append(followers, id)
		}
	}
	// Cut the leader off from both followers, then write to it: its entries cannot commit. The
	// followers are killed, not paused: a paused process still takes TCP data into its socket
	// buffers, and would append the entries on resuming.
	for _, id := range followers {
		c.node(id).kill9()
	}
	lone, err := kgo.NewClient(kgo.SeedBrokers(c.node(old).Addr), kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.DisableIdempotentWrite(), kgo.RecordDeliveryTimeout(3*time.Second), kgo.RecordRetries(0))
	if err != nil {
		t.Fatal(err)
	}
	defer lone.Close()
	for i := range 5 {
		lone.Produce(context.Background(), &kgo.Record{Topic: topic, Value: []byte(fmt.Sprintf("uncommitted-%d", i))},
			func(r *kgo.Record, err error) {
				if err == nil {
					t.Errorf("%s acknowledged without a majority", r.Value)
				}
			})
	}
	c.waitFor(10*time.Second, "the cut-off leader to store entries it cannot commit", func() error {
		if !holds(diskBatches(t, partDir(old)), "uncommitted-") {
			return errors.New("not in its segment yet")
		}
		return nil
	})

	// The followers come back and elect a leader of their own (the old one, paused, would refuse
	// them its vote: its log is longer), which takes writes.
	c.node(old).pause()
	t.Cleanup(c.node(old).resume)
	for _, id := range followers {
		c.node(id).launch()
	}
	for _, id := range followers {
		c.node(id).waitReady()
	}
	var leader int32
	c.waitFor(30*time.Second, "a new leader among the followers", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		md, err := c.node(followers[0]).admin().Metadata(ctx, topic)
		if err != nil {
			return err
		}
		p := md.Topics[topic].Partitions[0]
		if p.Leader == old || p.Leader < 0 {
			return fmt.Errorf("leader %d", p.Leader)
		}
		leader = p.Leader
		return nil
	})
	seeds := kgo.SeedBrokers(c.node(followers[0]).Addr, c.node(followers[1]).Addr)
	fresh, err := kgo.NewClient(seeds, kgo.RequiredAcks(kgo.AllISRAcks()), kgo.DisableIdempotentWrite())
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	produce(fresh, "after", 30)
	lone.Close()

	// The old leader returns: the new leader's log overrides its suffix.
	t.Logf("leader %d cut off with uncommitted entries; new leader %d took %d records", old, leader, len(acked))
	c.node(old).resume()
	c.waitFor(60*time.Second, "the old leader to drop its uncommitted suffix and catch up", func() error {
		b := diskBatches(t, partDir(old))
		if holds(b, "uncommitted-") {
			return errors.New("still holds the uncommitted records")
		}
		if !holds(b, fmt.Sprintf("after-%d", 29)) {
			return errors.New("has not caught up")
		}
		return nil
	})

	// Consumers see exactly the acknowledged records, from any leader: hand leadership back.
	got := consumeAll(t, c.node(leader), topic)
	var values []string
	for _, r := range got {
		values = append(values, string(r.Value))
	}
	if strings.Join(values, ",") != strings.Join(acked, ",") {
		t.Fatalf("consumed %v\nacknowledged %v", values, acked)
	}

	t.Logf("consumed the %d acknowledged records; the old leader's uncommitted suffix is gone", len(values))
	// Stopped cleanly, the three replicas hold the same batches, byte for byte.
	for _, b := range c.brokers {
		b.stop()
	}
	ref := diskBatches(t, partDir(leader))
	if len(ref) == 0 {
		t.Fatal("the leader's segment holds no batch")
	}
	for id := int32(1); id <= 3; id++ {
		got := diskBatches(t, partDir(id))
		if len(got) != len(ref) {
			t.Fatalf("broker %d holds %d batches, the leader %d", id, len(got), len(ref))
		}
		for i := range ref {
			if !bytes.Equal(got[i], ref[i]) {
				t.Fatalf("broker %d: batch %d differs from the leader's", id, i)
			}
		}
	}
	t.Logf("all three replicas hold the same %d batches", len(ref))
}

// A data directory written with the old Raft log store (dragonboat's tan, before 2026-12-07) is
// refused with a message that says what to do, and nothing in it is touched.
func TestDataDirOfAnotherRaftLogIsRefused(t *testing.T) {
	b := startBroker(t)
	b.stop()
	raftDir := filepath.Join(b.DataDir, "raft")
	if err := os.RemoveAll(raftDir); err != nil {
		t.Fatal(err)
	}
	nhc := config.NodeHostConfig{NodeHostDir: raftDir, RTTMillisecond: 5, RaftAddress: b.RaftAddr, Expert: config.GetDefaultExpertConfig()}
	nhc.Expert.LogDBFactory = tan.Factory
	nhc.Expert.LogDB = config.GetTinyMemLogDBConfig()
	nh, err := dragonboat.NewNodeHost(nhc)
	if err != nil {
		t.Fatal(err)
	}
	nh.Close()
	before := dirListing(t, raftDir)

	b.launch()
	select {
	case <-b.Exited():
	case <-time.After(60 * time.Second):
		t.Fatal("the broker started on a tan data directory")
	}
	b.Forget()
	if out := b.LogTail(4000); !strings.Contains(out, "before 2026-12-07") || !strings.Contains(out, "move the directory away") {
		t.Fatalf("the refusal does not say what to do:\n%s", out)
	}
	if after := dirListing(t, raftDir); after != before {
		t.Fatalf("the refused start changed the directory:\n%s\nthen\n%s", before, after)
	}
}

// dirListing lists the files under dir with their sizes.
func dirListing(t *testing.T, dir string) string {
	t.Helper()
	var out strings.Builder
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if !d.IsDir() {
			fmt.Fprintf(&out, "%s %d\n", path, info.Size())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out.String()
}
