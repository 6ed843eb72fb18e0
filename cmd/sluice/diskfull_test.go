package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicebroker/sluice/internal/kafkatest"
	"github.com/sluicebroker/sluice/internal/testcluster"
)

// smallFilesystem makes an ext4 file system of size bytes in a file, loop-mounts it and returns the
// mount point; it is unmounted at test end (after the brokers started later have stopped). Skips when
// the machine cannot mount (not root, no loop devices, no mkfs.ext4).
func smallFilesystem(t *testing.T, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a small file system for the full-disk test needs root")
	}
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		t.Skip("mkfs.ext4 not installed: cannot make a small file system for the full-disk test")
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	// -m 0: no blocks reserved for root, so what statfs calls available is all there is.
	if out, err := exec.Command(mkfs, "-q", "-F", "-m", "0", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot loop-mount a file system here (%v: %s): the full-disk test needs it", err, bytes.TrimSpace(out))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s; lazy unmount", mnt, err, out)
			_ = exec.Command("umount", "-l", mnt).Run()
		}
	})
	return mnt
}

func freeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * int64(st.Bsize)
}

// fillDisk takes space in a file at path until the file system has about leave bytes free (leave 0:
// until it is full, as another program filling the disk would).
func fillDisk(t *testing.T, path, dir string, leave int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	size := st.Size()
	for step := int64(64 << 20); step >= 4096; {
		want := freeBytes(t, dir) - leave
		if want < 4096 {
			break
		}
		n := min(step, want)
		if err := syscall.Fallocate(int(f.Fd()), 0, size, n); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				step /= 2
				continue
			}
			t.Fatal(err)
		}
		size += n
	}
}

// diskfullProduce sends one batch of one record to topic/0 with acks=all and returns the partition's
// error code, offset and error message.
func diskfullProduce(t *testing.T, cl *kgo.Client, topic string, value []byte) (int16, int64, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	id, err := testcluster.TopicID(ctx, cl, topic)
	if err != nil {
		t.Fatal(err)
	}
	req := kmsg.NewPtrProduceRequest()
	req.Acks, req.TimeoutMillis = -1, 10000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic, rt.TopicID = topic, id // Produce v13+ names topics by id
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Records = kafkatest.Batch(value)
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatalf("produce: %v", err)
	}
	p := resp.Topics[0].Partitions[0]
	msg := ""
	if p.ErrorMessage != nil {
		msg = *p.ErrorMessage
	}
	return p.ErrorCode, p.BaseOffset, msg
}

// diskfullCreateTopic creates topic with one partition, rf=1, and returns the error code and message.
func diskfullCreateTopic(t *testing.T, cl *kgo.Client, topic string) (int16, string) {
	t.Helper()
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic, rt.NumPartitions, rt.ReplicationFactor = topic, 1, 1
	return createTopicRequest(t, cl, rt)
}

// createAssigned creates topic with one partition on the given brokers (the first leads) and returns
// the error code and message.
func createAssigned(t *testing.T, cl *kgo.Client, topic string, replicas ...int32) (int16, string) {
	t.Helper()
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic, rt.NumPartitions, rt.ReplicationFactor = topic, -1, -1
	ra := kmsg.NewCreateTopicsRequestTopicReplicaAssignment()
	ra.Partition, ra.Replicas = 0, replicas
	rt.ReplicaAssignment = append(rt.ReplicaAssignment, ra)
	return createTopicRequest(t, cl, rt)
}

// createTopicRequest sends a CreateTopics request for rt alone and returns its error code and message.
func createTopicRequest(t *testing.T, cl *kgo.Client, rt kmsg.CreateTopicsRequestTopic) (int16, string) {
	t.Helper()
	req := kmsg.NewPtrCreateTopicsRequest()
	req.Topics = append(req.Topics, rt)
	req.TimeoutMillis = 30000
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatalf("create topics: %v", err)
	}
	msg := ""
	if m := resp.Topics[0].ErrorMessage; m != nil {
		msg = *m
	}
	return resp.Topics[0].ErrorCode, msg
}

func topicExists(t *testing.T, b *testBroker, topic string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	td, err := b.admin().ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return td.Has(topic)
}

// TestDiskFull runs a broker on a small real file system and fills it: produce is refused with
// KAFKA_STORAGE_ERROR once less than --storage-min-free-bytes would be left, CreateTopics answers an
// error and creates nothing; with the disk then filled to the last block by another program the
// broker stays up and serves reads; once space is freed, writes resume by themselves; after a kill -9
// every acknowledged record is there at its acknowledged offset, and no refused one.
func TestDiskFull(t *testing.T) {
	const minFree = 32 << 20
	mnt := smallFilesystem(t, 512<<20)
	b := newTestBroker(t, 0, freePort(t), freePort(t), "--storage-min-free-bytes", "33554432")
	b.DataDir = filepath.Join(mnt, "data")
	b.start()
	b.createTopic("full", 1, nil)
	cl := b.client()

	value := func(i int) []byte {
		v := make([]byte, 64<<10)
		binary.BigEndian.PutUint64(v, uint64(i))
		return v
	}
	acked := map[int64]int{} // offset -> value index
	next := 0
	// Leave 16 MiB above the threshold: a few hundred 64 KiB records' worth, then refusals.
	filler := filepath.Join(mnt, "filler")
	fillDisk(t, filler, mnt, minFree+16<<20)
	refused := false
	for ; next < 2000; next++ {
		code, off, _ := diskfullProduce(t, cl, "full", value(next))
		if code == kerr.KafkaStorageError.Code {
			refused = true
			break
		}
		if code != 0 {
			t.Fatalf("record %d: error %v, want success or KAFKA_STORAGE_ERROR", next, kerr.ErrorForCode(code))
		}
		acked[off] = next
	}
	if !refused {
		t.Fatalf("%d records of 64 KiB accepted with %d bytes free at the start: never refused", next, minFree+16<<20)
	}
	if len(acked) == 0 {
		t.Fatal("refused before any record was accepted")
	}
	if free := freeBytes(t, mnt); free < minFree/2 {
		t.Fatalf("refusals began with only %d bytes free (threshold %d)", free, minFree)
	}
	t.Logf("%d records acknowledged, then KAFKA_STORAGE_ERROR with %d bytes free", len(acked), freeBytes(t, mnt))

	// Someone else fills the disk to the last block. The broker stays up, refuses, and serves reads.
	fillDisk(t, filler+"2", mnt, 0)
	time.Sleep(3 * time.Second) // controller heartbeats, disk polls, Raft ticks on a full disk
	select {
	case <-b.Exited():
		t.Fatalf("broker exited on a full disk:\n%s", b.LogTail(4000))
	default:
	}
	next++
	if code, _, _ := diskfullProduce(t, cl, "full", value(next)); code != kerr.KafkaStorageError.Code {
		t.Fatalf("produce on a full disk: %v, want KAFKA_STORAGE_ERROR", kerr.ErrorForCode(code))
	}
	checkAcked := func(when string) {
		t.Helper()
		recs := consumeAll(t, b, "full")
		if len(recs) != len(acked) {
			t.Fatalf("%s: %d records in the log, %d acknowledged", when, len(recs), len(acked))
		}
		for _, r := range recs {
			i, ok := acked[r.Offset]
			if !ok || !bytes.Equal(r.Value, value(i)) {
				t.Fatalf("%s: offset %d holds a record that was not acknowledged there", when, r.Offset)
			}
		}
	}
	checkAcked("disk full")
	if code, msg := diskfullCreateTopic(t, cl, "more"); code != kerr.KafkaStorageError.Code {
		t.Fatalf("CreateTopics on a full disk: %v (%s), want KAFKA_STORAGE_ERROR", kerr.ErrorForCode(code), msg)
	}
	if topicExists(t, b, "more") {
		t.Fatal("CreateTopics refused, yet the topic exists")
	}

	// Space comes back: writes resume without a restart.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filler + "2"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		next++
		code, off, _ := diskfullProduce(t, cl, "full", value(next))
		if code == 0 {
			acked[off] = next
			break
		}
		if code != kerr.KafkaStorageError.Code || time.Now().After(deadline) {
			t.Fatalf("produce after freeing space: %v", kerr.ErrorForCode(code))
		}
		time.Sleep(200 * time.Millisecond)
	}

	if code, msg := diskfullCreateTopic(t, cl, "more"); code != 0 {
		t.Fatalf("CreateTopics after freeing space: %v (%s)", kerr.ErrorForCode(code), msg)
	}

	// With the tan Raft log every replica opens a fresh 64 MiB log file at start-up (the old ones
	// stay until compaction) and dragonboat panics when it cannot: the file system is sized for that.
	b.kill9()
	b.start()
	checkAcked("after kill -9 and restart")
	if !topicExists(t, b, "more") {
		t.Fatal("the topic created after freeing space is gone after the restart")
	}
}

// TestClusterFollowerDiskLow puts one follower of a replicated partition on a small real file system
// and fills it: the partition's leader (another broker, with plenty of disk) refuses produce with
// KAFKA_STORAGE_ERROR once the follower reports its disk under --storage-min-free-bytes, a partition
// without a replica there keeps accepting writes, new replicas are not placed there, the follower
// stays up even when another program then takes the last block, and writes resume by themselves once
// space is freed, with every acknowledged record at its offset. Without the refusal the leader keeps
// replicating to the full follower and its broker dies on the failed log write.
func TestClusterFollowerDiskLow(t *testing.T) {
	const minFree = 32 << 20
	minFreeFlag := []string{"--storage-min-free-bytes", "33554432"}
	mnt := smallFilesystem(t, 512<<20)
	c := startCluster(t, 3, minFreeFlag...)
	low := c.addBroker(func(b *testBroker) {
		b.DataDir = filepath.Join(mnt, "data")
		b.Args = append(b.Args, minFreeFlag...)
	})
	cl := c.client()
	if code, msg := createAssigned(t, cl, "onlow", 1, 2, low.ID); code != 0 {
		t.Fatalf("create onlow: %v %s", kerr.ErrorForCode(code), msg)
	}
	if code, msg := createAssigned(t, cl, "elsewhere", 1, 2, 3); code != 0 {
		t.Fatalf("create elsewhere: %v %s", kerr.ErrorForCode(code), msg)
	}
	c.waitBalanced("onlow") // broker 1 leads, the low-disk broker follows in sync

	value := func(i int) []byte {
		v := make([]byte, 16<<10)
		binary.BigEndian.PutUint64(v, uint64(i))
		return v
	}
	// produce retries what a client retries after a leadership change (its metadata may predate
	// the preferred leader's election), and returns the partition's final code; lastMsg is its
	// error message.
	var lastMsg string
	produce := func(topic string, v []byte) (int16, int64) {
		for range 50 {
			code, off, msg := diskfullProduce(t, cl, topic, v)
			lastMsg = msg
			if code != kerr.NotLeaderForPartition.Code && code != kerr.LeaderNotAvailable.Code {
				return code, off
			}
			cl.ForceMetadataRefresh()
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("produce to %s: no leader after 5 s", topic)
		return 0, 0
	}
	acked := map[int64]int{}
	next := 0
	for ; next < 20; next++ {
		code, off := produce("onlow", value(next))
		if code != 0 {
			t.Fatalf("record %d before filling the disk: %v", next, kerr.ErrorForCode(code))
		}
		acked[off] = next
	}

	// The follower's disk goes under its threshold (not full): within a heartbeat or two the leader
	// refuses; what it accepted until then is acknowledged and kept.
	filler := filepath.Join(mnt, "filler")
	fillDisk(t, filler, mnt, minFree-8<<20)
	deadline := time.Now().Add(20 * time.Second)
	for {
		next++
		code, off := produce("onlow", value(next))
		if code == kerr.KafkaStorageError.Code {
			break
		}
		if code != 0 {
			t.Fatalf("record %d: %v, want success or KAFKA_STORAGE_ERROR", next, kerr.ErrorForCode(code))
		}
		acked[off] = next
		if time.Now().After(deadline) {
			t.Fatalf("writes still accepted 20 s after the follower's disk went under the threshold (%d bytes free)", freeBytes(t, mnt))
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The refusal that counts is the leader's (broker 1, plenty of disk) naming the low follower. The
	// low broker may have been elected while the disk was being filled (its fsyncs stall) and refuse
	// for itself: then leadership goes back to broker 1 (rebalancing) first.
	c.waitBalanced("onlow")
	next++
	if code, _ := produce("onlow", value(next)); code != kerr.KafkaStorageError.Code ||
		!strings.Contains(lastMsg, fmt.Sprintf("broker %d, which holds", low.ID)) {
		t.Fatalf("produce through the leader with the follower's disk low: %v (%s), want KAFKA_STORAGE_ERROR naming broker %d",
			kerr.ErrorForCode(code), lastMsg, low.ID)
	}
	t.Logf("%d records acknowledged, then KAFKA_STORAGE_ERROR with %d bytes free on the follower", len(acked), freeBytes(t, mnt))
	if code, _ := produce("elsewhere", value(0)); code != 0 {
		t.Fatalf("produce to a partition with no replica on the low broker: %v", kerr.ErrorForCode(code))
	}
	if code, msg := createAssigned(t, cl, "placed-on-low", low.ID, 1, 2); code != kerr.KafkaStorageError.Code {
		t.Fatalf("CreateTopics with a replica on the low broker: %v (%s), want KAFKA_STORAGE_ERROR", kerr.ErrorForCode(code), msg)
	}

	// Another program takes the last block: the follower stays up, the leader keeps refusing.
	fillDisk(t, filler+"2", mnt, 0)
	time.Sleep(3 * time.Second) // Raft heartbeats, controller heartbeats, disk polls on a full disk
	select {
	case <-low.Exited():
		t.Fatalf("the follower's broker exited on a full disk:\n%s", low.LogTail(4000))
	default:
	}
	next++
	if code, _ := produce("onlow", value(next)); code != kerr.KafkaStorageError.Code {
		t.Fatalf("produce with the follower's disk full: %v, want KAFKA_STORAGE_ERROR", kerr.ErrorForCode(code))
	}

	// Space comes back: writes resume without a restart.
	for _, f := range []string{filler, filler + "2"} {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	deadline = time.Now().Add(30 * time.Second)
	for {
		next++
		code, off := produce("onlow", value(next))
		if code == 0 {
			acked[off] = next
			break
		}
		if code != kerr.KafkaStorageError.Code || time.Now().After(deadline) {
			t.Fatalf("produce after freeing the follower's space: %v", kerr.ErrorForCode(code))
		}
		time.Sleep(200 * time.Millisecond)
	}
	recs := consumeAll(t, c.node(1), "onlow")
	if len(recs) != len(acked) {
		t.Fatalf("%d records in the log, %d acknowledged", len(recs), len(acked))
	}
	for _, r := range recs {
		if i, ok := acked[r.Offset]; !ok || !bytes.Equal(r.Value, value(i)) {
			t.Fatalf("offset %d holds a record that was not acknowledged there", r.Offset)
		}
	}
	select {
	case <-low.Exited():
		t.Fatalf("the follower's broker exited:\n%s", low.LogTail(4000))
	default:
	}
}
