package replica

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/sluicebroker/sluice/segment"
)

func TestProduceReadRoundTrip(t *testing.T) {
	n := startNode(t, t.TempDir(), freeAddr(t), Config{})
	defer n.close()
	n.apply(testTopic{name: "t", partitions: 2, firstShard: 1000})
	p := n.partition("t", 0)
	_, _, term := p.Leader()

	var want int64
	for i := 0; i < 30; i++ {
		r := produce(t, p, makeBatch(-1, -1, 0, 1+i%4, 100))
		if r.BaseOffset != want {
			t.Fatalf("batch %d: base offset %d, want %d", i, r.BaseOffset, want)
		}
		if r.LogAppendTime != -1 || r.LogStartOffset != 0 {
			t.Fatalf("batch %d: result %+v", i, r)
		}
		want += int64(1 + i%4)
	}
	if hw := p.HighWatermark(); hw != want || p.LastStableOffset() != want {
		t.Fatalf("high watermark %d, LSO %d, want %d", hw, p.LastStableOffset(), want)
	}
	hs := readAll(t, p, 0)
	if len(hs) != 30 {
		t.Fatalf("read %d batches, want 30", len(hs))
	}
	checkDense(t, hs, 0)
	for _, h := range hs {
		if h.PartitionLeaderEpoch != term {
			t.Fatalf("leader epoch %d, want term %d", h.PartitionLeaderEpoch, term)
		}
	}
	// Reading from the middle of the log starts at (or before) that offset.
	if hs := readAll(t, p, 10); len(hs) == 0 || hs[0].BaseOffset > 10 {
		t.Fatalf("read from 10: %+v", hs)
	}
	if _, err := p.Read(want+1, 1024); !errors.Is(err, kerr.OffsetOutOfRange) {
		t.Fatalf("read past the high watermark: %v", err)
	}
	// The other partition is independent.
	if r := produce(t, n.partition("t", 1), makeBatch(-1, -1, 0, 1, 10)); r.BaseOffset != 0 {
		t.Fatalf("partition 1 base offset %d", r.BaseOffset)
	}
	if p.Size() < 30*100 {
		t.Fatalf("log size %d for 30 batches of 100-byte records", p.Size())
	}
	if got := p.MaxMessageBytes(); got != defaultMaxMessageBytes {
		t.Fatalf("max message bytes %d", got)
	}
}

// TestIdempotence runs the producer rules through the real Raft path.
func TestIdempotence(t *testing.T) {
	n := startNode(t, t.TempDir(), freeAddr(t), Config{})
	defer n.close()
	n.apply(testTopic{name: "idem", partitions: 1, firstShard: 1000})
	p := n.partition("idem", 0)

	steps := []struct {
		name    string
		pid     int64
		epoch   int16
		seq     int32
		records int
		wantErr error
		wantOff int64 // base offset expected on success
	}{
		{"unknown pid starts anywhere", 1, 1, 5, 2, nil, 0},
		{"next in sequence", 1, 1, 7, 3, nil, 2},
		{"duplicate of first", 1, 1, 5, 2, nil, 0},
		{"duplicate of last", 1, 1, 7, 3, nil, 2},
		{"gap", 1, 1, 11, 1, kerr.OutOfOrderSequenceNumber, 0},
		{"fenced epoch", 1, 0, 10, 1, kerr.InvalidProducerEpoch, 0},
		{"new epoch not at zero", 1, 2, 10, 1, kerr.OutOfOrderSequenceNumber, 0},
		{"new epoch at zero", 1, 2, 0, 1, nil, 5},
		{"old epoch now fenced", 1, 1, 10, 1, kerr.InvalidProducerEpoch, 0},
		{"second producer", 2, 0, 0, 1, nil, 6},
		{"non-idempotent never checked", -1, -1, 0, 1, nil, 7},
		{"non-idempotent again", -1, -1, 0, 1, nil, 8},
	}
	for _, st := range steps {
		r, err := p.Produce(context.Background(), makeBatch(st.pid, st.epoch, st.seq, st.records, 20))
		if err != st.wantErr {
			t.Fatalf("%s: err %v, want %v", st.name, err, st.wantErr)
		}
		if err == nil && r.BaseOffset != st.wantOff {
			t.Fatalf("%s: base offset %d, want %d", st.name, r.BaseOffset, st.wantOff)
		}
	}
	hs := readAll(t, p, 0)
	checkDense(t, hs, 0)
	if len(hs) != 6 || p.HighWatermark() != 9 {
		t.Fatalf("%d batches, high watermark %d; want 6 and 9 (duplicates must not append)", len(hs), p.HighWatermark())
	}
}

func TestLogAppendTime(t *testing.T) {
	n := startNode(t, t.TempDir(), freeAddr(t), Config{})
	defer n.close()
	n.apply(testTopic{name: "lat", partitions: 1, firstShard: 1000, configs: map[string]string{"message.timestamp.type": "LogAppendTime"}})
	p := n.partition("lat", 0)
	before := time.Now().UnixMilli()
	r := produce(t, p, makeBatch(-1, -1, 0, 2, 10))
	if r.LogAppendTime < before || r.LogAppendTime > time.Now().UnixMilli() {
		t.Fatalf("log append time %d not in [%d, now]", r.LogAppendTime, before)
	}
	hs := readAll(t, p, 0) // Validate checks the recomputed CRC
	if len(hs) != 1 || !hs[0].HasLogAppendTime() || hs[0].MaxTimestamp != r.LogAppendTime {
		t.Fatalf("stored header %+v, append time %d", hs, r.LogAppendTime)
	}
}

func TestRestartKeepsOffsetsAndProducers(t *testing.T) {
	dir, addr := t.TempDir(), freeAddr(t)
	topic := testTopic{name: "r", partitions: 1, firstShard: 1000}
	n := startNode(t, dir, addr, Config{})
	n.apply(topic)
	p := n.partition("r", 0)
	for i := 0; i < 20; i++ {
		produce(t, p, makeBatch(9, 0, int32(i*2), 2, 50))
	}
	n.close()

	n = startNode(t, dir, addr, Config{})
	defer n.close()
	n.apply(topic)
	p = n.partition("r", 0)
	if hw := p.HighWatermark(); hw != 40 {
		t.Fatalf("high watermark after restart %d, want 40", hw)
	}
	// A retry of the last batch is still recognised...
	if r := produce(t, p, makeBatch(9, 0, 38, 2, 50)); r.BaseOffset != 38 {
		t.Fatalf("duplicate after restart: base offset %d, want 38", r.BaseOffset)
	}
	// ...a gap is still refused, and the sequence continues.
	if _, err := p.Produce(context.Background(), makeBatch(9, 0, 41, 1, 50)); err != kerr.OutOfOrderSequenceNumber {
		t.Fatalf("gap after restart: %v", err)
	}
	if r := produce(t, p, makeBatch(9, 0, 40, 1, 50)); r.BaseOffset != 40 {
		t.Fatalf("next batch: base offset %d, want 40", r.BaseOffset)
	}
	hs := readAll(t, p, 0)
	checkDense(t, hs, 0)
	if len(hs) != 21 {
		t.Fatalf("%d batches after restart, want 21", len(hs))
	}
}

func TestWait(t *testing.T) {
	n := startNode(t, t.TempDir(), freeAddr(t), Config{})
	defer n.close()
	n.apply(testTopic{name: "w", partitions: 1, firstShard: 1000})
	p := n.partition("w", 0)

	ch := p.Wait(0)
	select {
	case <-ch:
		t.Fatal("Wait(0) fired on an empty log")
	default:
	}
	if p.Wait(0) != ch {
		t.Fatal("waiters do not share a channel")
	}
	produce(t, p, makeBatch(-1, -1, 0, 3, 10))
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not wake on append")
	}
	select {
	case <-p.Wait(2):
	default:
		t.Fatal("Wait below the high watermark must be ready")
	}
	later := p.Wait(3)
	select {
	case <-later:
		t.Fatal("Wait(3) fired with high watermark 3")
	default:
	}
	n.mgr.Close()
	n.mgr = nil
	select {
	case <-later:
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not wake on close")
	}
	select {
	case <-p.Wait(100):
	default:
		t.Fatal("Wait on a closed partition must be ready")
	}
}

func TestConcurrentProducersDense(t *testing.T) {
	n := startNode(t, t.TempDir(), freeAddr(t), Config{})
	defer n.close()
	n.apply(testTopic{name: "c", partitions: 1, firstShard: 1000})
	p := n.partition("c", 0)
	const producers, each = 16, 50
	var wg sync.WaitGroup
	errs := make(chan error, producers)
	for g := 0; g < producers; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				// Idempotent, one in flight each: sequences must never fail.
				if _, err := p.Produce(context.Background(), makeBatch(int64(100+g), 0, int32(i), 1, 64)); err != nil {
					errs <- err
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	hs := readAll(t, p, 0)
	checkDense(t, hs, 0)
	if len(hs) != producers*each {
		t.Fatalf("%d batches, want %d", len(hs), producers*each)
	}
}

func TestRetentionThroughManager(t *testing.T) {
	n := startNode(t, t.TempDir(), freeAddr(t), Config{RetentionCheckInterval: time.Hour})
	defer n.close()
	topic := testTopic{name: "ret", partitions: 1, firstShard: 1000, configs: map[string]string{"segment.bytes": "4096"}}
	n.apply(topic)
	p := n.partition("ret", 0)
	for i := 0; i < 40; i++ {
		produce(t, p, makeBatch(-1, -1, 0, 1, 1000))
	}
	n.mgr.EnforceRetention(time.Now())
	if s := p.LogStartOffset(); s != 0 {
		t.Fatalf("retention without limits moved the log start to %d", s)
	}
	// Lower retention.bytes through a metadata change, as AlterConfigs would.
	topic.configs = map[string]string{"segment.bytes": "4096", "retention.bytes": "8192"}
	n.apply(topic)
	n.mgr.EnforceRetention(time.Now())
	start := p.LogStartOffset()
	if start == 0 || start >= 40 {
		t.Fatalf("log start offset %d after retention, want in (0, 40)", start)
	}
	if _, err := p.Read(0, 1024); !errors.Is(err, kerr.OffsetOutOfRange) {
		t.Fatalf("read below the log start: %v", err)
	}
	checkDense(t, readAll(t, p, start), readAll(t, p, start)[0].BaseOffset)
	if r := produce(t, p, makeBatch(-1, -1, 0, 1, 10)); r.LogStartOffset != start || r.BaseOffset != 40 {
		t.Fatalf("produce after retention: %+v", r)
	}
}

func TestDeleteTopic(t *testing.T) {
	n := startNode(t, t.TempDir(), freeAddr(t), Config{})
	defer n.close()
	keep := testTopic{name: "keep", partitions: 1, firstShard: 1000}
	gone := testTopic{name: "gone", partitions: 2, firstShard: 1001}
	n.apply(keep, gone)
	p := n.partition("gone", 0)
	produce(t, p, makeBatch(-1, -1, 0, 1, 10))
	waiter := p.Wait(5)
	dir := p.dir
	if _, err := os.Stat(dir); err != nil {
		t.Fatal(err)
	}
	n.apply(keep)
	if _, ok := n.mgr.Partition("gone", 0); ok {
		t.Fatal("deleted partition still served")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("partition dir still there: %v", err)
	}
	select {
	case <-waiter:
	default:
		t.Fatal("waiter not woken by deletion")
	}
	if _, err := p.Produce(context.Background(), makeBatch(-1, -1, 0, 1, 10)); err != kerr.NotLeaderForPartition {
		t.Fatalf("produce to a deleted partition: %v", err)
	}
	// Recreated under the same name with new shards: a fresh, empty log.
	gone.firstShard = 1010
	n.apply(keep, gone)
	if r := produce(t, n.partition("gone", 0), makeBatch(-1, -1, 0, 1, 10)); r.BaseOffset != 0 {
		t.Fatalf("recreated topic starts at %d", r.BaseOffset)
	}
	if r := produce(t, n.partition("keep", 0), makeBatch(-1, -1, 0, 1, 10)); r.BaseOffset != 0 {
		t.Fatalf("kept topic: base offset %d", r.BaseOffset)
	}
}

func TestTopicOptions(t *testing.T) {
	tc, err := ParseTopicConfig(defaultTestOptions(), 1000, map[string]string{
		"retention.ms": "60000", "retention.bytes": "-1", "segment.bytes": "1048576", "segment.ms": "3600000",
		"max.message.bytes": "2048", "message.timestamp.type": "LogAppendTime", "cleanup.policy": "delete",
		"unclean.leader.election.enable": "false",
	})
	if err != nil {
		t.Fatal(err)
	}
	if tc.Log.RetentionAge != time.Minute || tc.Log.RetentionBytes != -1 || tc.Log.SegmentBytes != 1<<20 ||
		tc.Log.SegmentAge != time.Hour || tc.MaxMessageBytes != 2048 || !tc.LogAppendTime || tc.Compact {
		t.Fatalf("parsed %+v", tc)
	}
	tc, err = ParseTopicConfig(defaultTestOptions(), 1000, map[string]string{"cleanup.policy": "compact"})
	if err != nil || !tc.Compact || tc.Log.RetentionAge != 0 || tc.Log.RetentionBytes >= 0 {
		t.Fatalf("compact: %+v %v", tc, err)
	}
	for k, v := range map[string]string{
		"retention.ms": "abc", "retention.bytes": "-2", "segment.bytes": "10", "segment.ms": "0",
		"max.message.bytes": "-5", "message.timestamp.type": "Now", "cleanup.policy": "shred",
	} {
		if _, err := TopicOptions(defaultTestOptions(), map[string]string{k: v}); err == nil {
			t.Errorf("%s=%s accepted", k, v)
		}
	}
}

func defaultTestOptions() segment.Options {
	return segment.Options{RetentionAge: 7 * 24 * time.Hour, RetentionBytes: -1}
}

func TestRetentionLoop(t *testing.T) {
	n := startNode(t, t.TempDir(), freeAddr(t), Config{RetentionCheckInterval: 10 * time.Millisecond})
	defer n.close()
	n.apply(testTopic{name: "loop", partitions: 1, firstShard: 1000, configs: map[string]string{"segment.bytes": "4096", "retention.bytes": "4096"}})
	p := n.partition("loop", 0)
	for i := 0; i < 20; i++ {
		produce(t, p, makeBatch(-1, -1, 0, 1, 1000))
	}
	deadline := time.Now().Add(20 * time.Second)
	for p.LogStartOffset() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the background retention never ran")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestTopicsChangedWhileDown: a topic deleted while the node was down is
// swept, and one recreated under the same name starts empty instead of
// resuming the old partition's files.
func TestTopicsChangedWhileDown(t *testing.T) {
	dir, addr := t.TempDir(), freeAddr(t)
	n := startNode(t, dir, addr, Config{})
	n.apply(testTopic{name: "gone", partitions: 1, firstShard: 1000}, testTopic{name: "again", partitions: 1, firstShard: 1001})
	for _, name := range []string{"gone", "again"} {
		for i := 0; i < 3; i++ {
			produce(t, n.partition(name, 0), makeBatch(-1, -1, 0, 1, 10))
		}
	}
	goneDir := n.partition("gone", 0).dir
	n.close()

	n = startNode(t, dir, addr, Config{})
	defer n.close()
	md := n.metadata([]testTopic{{name: "again", partitions: 1, firstShard: 1002}})
	md.NextShardID = 1003
	if err := n.mgr.Apply(md); err != nil {
		t.Fatal(err)
	}
	p := n.partition("again", 0)
	n.waitLeader(p)
	if hw := p.HighWatermark(); hw != 0 {
		t.Fatalf("recreated topic resumed the old log: high watermark %d", hw)
	}
	if r := produce(t, p, makeBatch(-1, -1, 0, 1, 10)); r.BaseOffset != 0 {
		t.Fatalf("recreated topic: base offset %d", r.BaseOffset)
	}
	if _, err := os.Stat(goneDir); !os.IsNotExist(err) {
		t.Fatalf("directory of the deleted topic still there: %v", err)
	}
}

// TestTopicReplacedInOneChange: one metadata change both deletes a topic and
// recreates it under the same name (new shards).
func TestTopicReplacedInOneChange(t *testing.T) {
	n := startNode(t, t.TempDir(), freeAddr(t), Config{})
	defer n.close()
	n.apply(testTopic{name: "x", partitions: 1, firstShard: 1000})
	old := n.partition("x", 0)
	produce(t, old, makeBatch(-1, -1, 0, 4, 10))
	n.apply(testTopic{name: "x", partitions: 1, firstShard: 1005})
	p := n.partition("x", 0)
	if p == old || p.ShardID() != 1005 {
		t.Fatalf("partition not replaced: shard %d", p.ShardID())
	}
	if r := produce(t, p, makeBatch(-1, -1, 0, 1, 10)); r.BaseOffset != 0 {
		t.Fatalf("replaced topic: base offset %d", r.BaseOffset)
	}
}

// TestAdmissionInFlight: with the segment Raft log a batch is in the log once proposed, so the
// leader admits idempotent batches against what it has in flight too. Pipelined batches of one
// producer all go in, in order; a repeat of one still in flight is refused as retriable and, once
// its original is applied, answered with the original's offset; a gap behind the in-flight tail is
// refused. The log holds each batch once.
func TestAdmissionInFlight(t *testing.T) {
	n := startNode(t, t.TempDir(), freeAddr(t), Config{})
	defer n.close()
	n.apply(testTopic{name: "inflight", partitions: 1, firstShard: 1000})
	p := n.partition("inflight", 0)
	produce(t, p, makeBatch(7, 0, 0, 1, 20)) // the leader is ready

	type outcome struct {
		r   ProduceResult
		err error
	}
	const pipelined = 50
	results := make([]chan outcome, pipelined)
	var retried []error
	for i := range pipelined {
		results[i] = make(chan outcome, 1)
		ch := results[i]
		p.ProduceAsync(makeBatch(7, 0, int32(1+2*i), 2, 20), 10*time.Second, func(r ProduceResult, err error) { ch <- outcome{r, err} })
		if i == pipelined-1 {
			// A repeat of the batch just sent, while it may still be in flight.
			dup := make(chan outcome, 1)
			p.ProduceAsync(makeBatch(7, 0, int32(1+2*i), 2, 20), 10*time.Second, func(r ProduceResult, err error) { dup <- outcome{r, err} })
			o := <-dup
			if o.err != nil {
				if o.err != kerr.RequestTimedOut {
					t.Fatalf("repeat in flight: %v, want REQUEST_TIMED_OUT (retriable) or the original's offset", o.err)
				}
				retried = append(retried, o.err)
			} else if o.r.BaseOffset != int64(1+2*i) {
				t.Fatalf("repeat answered offset %d, want %d", o.r.BaseOffset, 1+2*i)
			}
		}
	}
	for i, ch := range results {
		o := <-ch
		if o.err != nil || o.r.BaseOffset != int64(1+2*i) {
			t.Fatalf("pipelined batch %d: offset %d, %v", i, o.r.BaseOffset, o.err)
		}
	}
	// Now applied: the repeat gets the original's offset (it is among the last five), a gap is refused.
	i := pipelined - 1
	if r, err := p.Produce(context.Background(), makeBatch(7, 0, int32(1+2*i), 2, 20)); err != nil || r.BaseOffset != int64(1+2*i) {
		t.Fatalf("repeat after apply: offset %d, %v", r.BaseOffset, err)
	}
	if _, err := p.Produce(context.Background(), makeBatch(7, 0, 1+2*pipelined+1, 1, 20)); err != kerr.OutOfOrderSequenceNumber {
		t.Fatalf("gap: %v", err)
	}
	hs := readAll(t, p, 0)
	checkDense(t, hs, 0)
	if len(hs) != 1+pipelined || p.HighWatermark() != 1+2*pipelined {
		t.Fatalf("%d batches, high watermark %d; want %d and %d", len(hs), p.HighWatermark(), 1+pipelined, 1+2*pipelined)
	}
	t.Logf("%d in-flight repeats refused as retriable", len(retried))
}
