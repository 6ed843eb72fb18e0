package metrics

import (
	"testing"
	"time"
)

// BenchmarkProduceRequestMetrics is what one produce request of one batch adds to the request path:
// the request counter and latency histogram, network bytes in and out, and the topic's byte and
// record counters.
func BenchmarkProduceRequestMetrics(b *testing.B) {
	start := Now()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			BytesIn(1100)
			t := ForTopic("bench")
			t.BytesIn.Add(1000)
			t.RecordsIn.Add(10)
			Request(0, start)
			BytesOut(60)
		}
	})
}

// BenchmarkRaftCommitObserve is the per-batch cost on the Raft completion path: a clock read at
// proposal and one at commit, and the histogram.
func BenchmarkRaftCommitObserve(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		start := Now()
		RaftCommitSeconds.Observe(start.Seconds())
	}
}

// BenchmarkClock compares the monotonic reading with time.Now.
func BenchmarkClock(b *testing.B) {
	b.Run("metrics.Now", func(b *testing.B) {
		for b.Loop() {
			_ = Now()
		}
	})
	b.Run("time.Now", func(b *testing.B) {
		for b.Loop() {
			_ = time.Now()
		}
	})
}

func TestForTopicIsStable(t *testing.T) {
	first := ForTopic("a")
	if ForTopic("a") != first {
		t.Fatal("a topic's counters are resolved once")
	}
	ForgetTopic("a")
	if ForTopic("a") == nil {
		t.Fatal("a forgotten topic comes back")
	}
}
