package replica

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkProduce measures committed produces of 1 KiB batches (one record)
// through Raft into the segment log. Each producer has one batch in flight and
// cycles through the partitions, so throughput with many producers comes from
// pipelining into the group commit.
func BenchmarkProduce(b *testing.B) {
	for _, partitions := range []int{1, 8} {
		for _, producers := range []int{1, 64} {
			b.Run(fmt.Sprintf("partitions=%d/producers=%d", partitions, producers), func(b *testing.B) {
				benchProduce(b, partitions, producers)
			})
		}
	}
}

func benchProduce(b *testing.B, partitions, producers int) {
	n := startNode(b, b.TempDir(), freeAddr(b), Config{})
	defer n.close()
	n.apply(testTopic{name: "bench", partitions: partitions, firstShard: 1000})
	batch := makeBatch(-1, -1, 0, 1, 1024-segmentHeaderAndRecordOverhead)
	b.SetBytes(int64(len(batch)))
	var left atomic.Int64
	left.Store(int64(b.N))
	var failed atomic.Int64
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	parts := make([]*Partition, partitions)
	for i := range parts {
		parts[i] = n.partition("bench", int32(i))
	}
	for g := 0; g < producers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			done := make(chan error, 1)
			complete := func(_ ProduceResult, err error) { done <- err }
			// Each producer cycles through the partitions, one batch in flight.
			for i := g; left.Add(-1) >= 0; i++ {
				parts[i%partitions].ProduceAsync(batch, 10*time.Second, complete)
				if err := <-done; err != nil {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	if f := failed.Load(); f > 0 {
		b.Fatalf("%d produces failed", f)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "batches/s")
}

// segmentHeaderAndRecordOverhead makes makeBatch's output 1 KiB in total.
const segmentHeaderAndRecordOverhead = 61 + 8
