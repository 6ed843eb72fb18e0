package quorum

import (
	"context"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	sm "github.com/lni/dragonboat/v4/statemachine"
)

// benchShard starts a Host with one rf=1 counter shard whose leader is elected.
func benchShard(b *testing.B) (*Host, uint64) {
	b.Helper()
	dir := b.TempDir()
	addr := freeAddr(b)
	h, err := NewHost(HostConfig{NodeID: 1, RaftAddr: addr, DataDir: filepath.Join(dir, "raft")})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(h.Close)
	sms := newCounterSMs(dir)
	const shard = FirstPartitionShardID
	if err := h.StartOnDiskShard(shard, map[uint64]string{1: addr}, false, sms.create); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := h.Propose(ctx, shard, cmdOf(1)); err != nil {
		b.Fatal(err)
	}
	return h, shard
}

// BenchmarkProposeAsync: 1 KiB commands, up to 256 in flight, rf=1 (one fsync per Raft batch).
func BenchmarkProposeAsync(b *testing.B) { benchProposeAsync(b, 1024, 256) }

// BenchmarkProposeAsync64K: 64 KiB commands (a typical Kafka produce batch), up to 32 in flight.
func BenchmarkProposeAsync64K(b *testing.B) { benchProposeAsync(b, 64<<10, 32) }

func benchProposeAsync(b *testing.B, size, inflight int) {
	h, shard := benchShard(b)
	cmd := make([]byte, size)
	sem := make(chan struct{}, inflight)
	var wg sync.WaitGroup
	done := func(_ sm.Result, err error) {
		if err != nil {
			b.Error(err)
		}
		<-sem
		wg.Done()
	}
	b.SetBytes(int64(len(cmd)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		sem <- struct{}{}
		wg.Add(1)
		if err := h.ProposeAsync(shard, cmd, 10*time.Second, done); err != nil {
			b.Fatal(err)
		}
	}
	wg.Wait()
}

// BenchmarkProposeGoroutineEach is the alternative ProposeAsync design, for comparison: one
// goroutine per proposal waiting on its RequestState.
func BenchmarkProposeGoroutineEach(b *testing.B) {
	h, shard := benchShard(b)
	v, _ := h.shards.Load(shard)
	s := v.(*shardState)
	cmd := make([]byte, 1024)
	sem := make(chan struct{}, 256)
	var wg sync.WaitGroup
	b.SetBytes(int64(len(cmd)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		sem <- struct{}{}
		wg.Add(1)
		rs, err := h.nh.Propose(s.session, cmd, 10*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		go func() {
			r := <-rs.AppliedC()
			rs.Release()
			if _, err := resultOf(r); err != nil {
				b.Error(err)
			}
			<-sem
			wg.Done()
		}()
	}
	wg.Wait()
}

// BenchmarkProposeSync: one caller, one proposal at a time (latency of one commit + apply).
func BenchmarkProposeSync(b *testing.B) {
	h, shard := benchShard(b)
	cmd := make([]byte, 1024)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := h.Propose(ctx, shard, cmd); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIdleShards starts 100 rf=1 shards, reports the heap and goroutines each adds once
// idle, then the time to restart the Host with all of them (until every shard has a leader).
func BenchmarkIdleShards(b *testing.B) {
	const n = 100
	for i := 0; i < b.N; i++ {
		dir := b.TempDir()
		addr := freeAddr(b)
		sms := newCounterSMs(dir)
		heap := func() uint64 {
			runtime.GC()
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			return ms.HeapAlloc
		}
		var hostStart, shardCalls time.Duration
		start := func() (*Host, time.Duration) {
			t0 := time.Now()
			h, err := NewHost(HostConfig{NodeID: 1, RaftAddr: addr, DataDir: filepath.Join(dir, "raft")})
			if err != nil {
				b.Fatal(err)
			}
			hostStart = time.Since(t0)
			for s := uint64(0); s < n; s++ {
				if err := h.StartOnDiskShard(FirstPartitionShardID+s, map[uint64]string{1: addr}, false, sms.create); err != nil {
					b.Fatal(err)
				}
			}
			shardCalls = time.Since(t0) - hostStart
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			for s := uint64(0); s < n; s++ {
				if _, err := h.WaitLeader(ctx, FirstPartitionShardID+s); err != nil {
					b.Fatal(err)
				}
			}
			return h, time.Since(t0)
		}

		base := heap()
		g0 := runtime.NumGoroutine()
		h0, err := NewHost(HostConfig{NodeID: 1, RaftAddr: addr, DataDir: filepath.Join(dir, "empty")})
		if err != nil {
			b.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
		hostHeap, hostG := heap()-base, runtime.NumGoroutine()-g0
		h0.Close()

		base = heap()
		g0 = runtime.NumGoroutine()
		h, first := start()
		time.Sleep(500 * time.Millisecond)
		perShard := (float64(heap()) - float64(base) - float64(hostHeap)) / n
		perShardG := float64(runtime.NumGoroutine()-g0-hostG) / n
		h.Close()
		h, restart := start()
		h.Close()

		b.ReportMetric(float64(hostHeap)/(1<<20), "host-heap-MiB")
		b.ReportMetric(float64(hostG), "host-goroutines")
		b.ReportMetric(perShard/1024, "heap-KiB/shard")
		b.ReportMetric(perShardG, "goroutines/shard")
		b.ReportMetric(float64(first.Milliseconds()), "start100-ms")
		b.ReportMetric(float64(restart.Milliseconds()), "restart100-ms")
		b.ReportMetric(float64(hostStart.Milliseconds()), "restart-nodehost-ms")
		b.ReportMetric(float64(shardCalls.Milliseconds()), "restart-start-calls-ms")
	}
}
