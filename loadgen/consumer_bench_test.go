package loadgen

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// BenchmarkCheckPartition: the consumer's per-record check (sequence, gaps, end-to-end timing) over
// one fetched partition of 1,000 records from 4 producers.
func BenchmarkCheckPartition(b *testing.B) {
	const records, producers = 1000, 4
	c := &consumer{group: newGroupCheck([]string{"t"}, 1, producers), e2e: NewRecorder(), runStart: 1}
	p := kgo.FetchTopicPartition{Topic: "t", FetchPartition: kgo.FetchPartition{Partition: 0}}
	for i := range records {
		v := make([]byte, 100)
		PutStamp(v, int64(1000+i), uint32(i%producers), uint64(i/producers))
		p.Records = append(p.Records, &kgo.Record{Offset: int64(i), Value: v})
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c.group.nextOffset[0] = -1 // each round reads the partition anew
		for j := range c.group.lastSeq[0] {
			c.group.lastSeq[0][j] = -1
		}
		c.e2e.Lock()
		c.checkPartition(p, 5000)
		c.e2e.Unlock()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*records), "ns/record")
}
