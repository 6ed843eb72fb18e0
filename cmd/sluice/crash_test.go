package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestCrashKeepsAcknowledgedRecords kills the broker with SIGKILL while an idempotent acks=all producer
// is mid-stream, restarts it on the same data, and checks that every acknowledged record is there exactly
// once, at the offset it was acknowledged with, in order. It does this over several kill/restart rounds.
func TestCrashKeepsAcknowledgedRecords(t *testing.T) {
	b := startBroker(t)
	const topic = "crash"
	const partitions = 4
	b.createTopic(topic, partitions, nil)

	type ack struct {
		partition int32
		offset    int64
	}
	var (
		mu    sync.Mutex
		acked = map[string]ack{} // value -> where it was acknowledged
	)
	seq := 0
	rounds := 3
	if n, err := strconv.Atoi(os.Getenv("SLUICE_CRASH_ROUNDS")); err == nil && n > 0 {
		rounds = n // the 100-restart run: SLUICE_CRASH_ROUNDS=100 go test ./cmd/sluice -run TestCrashKeeps
	}
	for round := 0; round < rounds; round++ {
		prod := b.client(
			kgo.RequiredAcks(kgo.AllISRAcks()),
			kgo.ProducerLinger(time.Millisecond),
			kgo.RecordRetries(3),
			kgo.RequestTimeoutOverhead(2*time.Second),
			kgo.RetryTimeout(3*time.Second),
			kgo.ProduceRequestTimeout(2*time.Second),
		)
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				seq++
				v := fmt.Sprintf("r%d-%07d", round, seq)
				prod.Produce(ctx, &kgo.Record{Topic: topic, Key: []byte(v), Value: []byte(v)}, func(r *kgo.Record, err error) {
					if err != nil {
						return
					}
					mu.Lock()
					acked[string(r.Value)] = ack{r.Partition, r.Offset}
					mu.Unlock()
				})
				if seq%200 == 0 {
					time.Sleep(time.Millisecond) // keep the buffer from filling while the broker is down
				}
			}
		}()
		// Let acknowledgements accumulate, then kill mid-stream.
		deadline := time.Now().Add(20 * time.Second)
		for {
			mu.Lock()
			n := len(acked)
			mu.Unlock()
			if n >= 3000*(round+1) || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		b.kill9()
		cancel()
		wg.Wait()
		prod.Close()
		b.start()
	}

	mu.Lock()
	defer mu.Unlock()
	if len(acked) < 1000 {
		t.Fatalf("only %d records acknowledged before the kills; the test needs a stream to cut", len(acked))
	}
	got := consumeAll(t, b, topic)
	seen := map[string]ack{}
	last := map[int32]int64{}
	for _, r := range got {
		if prev, dup := seen[string(r.Value)]; dup {
			t.Fatalf("record %s stored twice: %d/%d and %d/%d", r.Value, prev.partition, prev.offset, r.Partition, r.Offset)
		}
		seen[string(r.Value)] = ack{r.Partition, r.Offset}
		if o, ok := last[r.Partition]; ok && r.Offset != o+1 {
			t.Fatalf("partition %d: offset %d follows %d", r.Partition, r.Offset, o)
		}
		last[r.Partition] = r.Offset
	}
	for v, a := range acked {
		s, ok := seen[v]
		if !ok {
			t.Fatalf("acknowledged record %s (%d/%d) lost after kill -9", v, a.partition, a.offset)
		}
		if s != a {
			t.Fatalf("acknowledged record %s at %d/%d, found at %d/%d", v, a.partition, a.offset, s.partition, s.offset)
		}
	}
	t.Logf("%d acknowledged records survived %d kill -9 rounds; %d stored in all", len(acked), rounds, len(got))
}
