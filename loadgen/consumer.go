package loadgen

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// groupCheck follows one consumer group's view of every partition: the last sequence seen
// from each producer, and the next expected offset. It catches records delivered twice or
// out of order; a count equal to what was acknowledged then means each arrived exactly once.
type groupCheck struct {
	mu         sync.Mutex
	topicIndex map[string]int
	partitions int
	producers  int
	lastSeq    [][]int64 // [topic*partitions+partition][producer], -1 = none yet
	nextOffset []int64   // -1 = none yet

	consumed      atomic.Int64 // records of this run, counted once per delivery
	consumedBytes atomic.Int64
	assigned      atomic.Int64 // partitions currently assigned to the group's consumers
	outOfOrder    atomic.Int64 // a producer's sequence did not increase within a partition
	offsetGaps    atomic.Int64 // an offset skipped within a partition
	stale         atomic.Int64 // records from before this run
	foreign       atomic.Int64 // records loadgen did not write
}

func newGroupCheck(topics []string, partitions, producers int) *groupCheck {
	g := &groupCheck{topicIndex: make(map[string]int), partitions: partitions, producers: producers}
	for i, t := range topics {
		g.topicIndex[t] = i
	}
	n := len(topics) * partitions
	g.lastSeq = make([][]int64, n)
	g.nextOffset = make([]int64, n)
	for i := range g.lastSeq {
		g.lastSeq[i] = make([]int64, producers)
		for j := range g.lastSeq[i] {
			g.lastSeq[i][j] = -1
		}
		g.nextOffset[i] = -1
	}
	return g
}

// consumer polls one client of a group and records end-to-end latency: the delivery time
// (one clock read per poll) minus the intended send time stamped in the value.
type consumer struct {
	client *kgo.Client     // kgo mode
	native *nativeConsumer // native mode
	group  *groupCheck
	e2e    *Recorder
	errs   errorCounts
	// runStart (Unix ns): older stamps are records of earlier runs.
	runStart int64
	// measureFrom (Unix ns): the end of warm-up, set while the consumer already polls.
	measureFrom atomic.Int64
}

func (c *consumer) setMeasureFrom(ns int64) { c.measureFrom.Store(ns) }

// close stops the consumer's client (a native consumer stops with its context).
func (c *consumer) close() {
	if c.client != nil {
		c.client.Close()
	}
}

func (c *consumer) run(ctx context.Context) {
	if c.native != nil {
		c.native.run(ctx)
		return
	}
	for {
		fetches := c.client.PollFetches(ctx)
		if fetches.IsClientClosed() || ctx.Err() != nil {
			return
		}
		now := time.Now().UnixNano()
		fetches.EachError(func(_ string, _ int32, err error) {
			if !errors.Is(err, context.Canceled) {
				c.errs.add(err)
			}
		})
		c.e2e.Lock()
		fetches.EachPartition(func(p kgo.FetchTopicPartition) {
			c.checkPartition(p, now)
		})
		c.e2e.Unlock()
	}
}

// checkPartition handles one partition's fetched records; the caller holds c.e2e's lock.
func (c *consumer) checkPartition(p kgo.FetchTopicPartition, now int64) {
	g := c.group
	ti, ok := g.topicIndex[p.Topic]
	if !ok || int(p.Partition) >= g.partitions || len(p.Records) == 0 {
		return
	}
	pt := c.beginPartition(ti*g.partitions + int(p.Partition))
	for _, r := range p.Records {
		pt.record(r.Offset, r.Value, now)
	}
	pt.end()
}

// partitionCheck checks one partition's records of one fetch, in offset order, against the group's
// view (groupCheck) and times them; it holds the group's lock from beginPartition to end, and the
// caller holds c.e2e's.
type partitionCheck struct {
	c                                   *consumer
	idx                                 int
	last                                []int64
	next                                int64
	measureFrom                         int64
	n, bytes, ooo, gaps, stale, foreign int64
}

func (c *consumer) beginPartition(idx int) partitionCheck {
	g := c.group
	g.mu.Lock()
	return partitionCheck{c: c, idx: idx, last: g.lastSeq[idx], next: g.nextOffset[idx], measureFrom: c.measureFrom.Load()}
}

// seen reports whether the record at off was checked already (a fetch from inside a batch
// returns the batch whole).
func (pt *partitionCheck) seen(off int64) bool { return pt.next >= 0 && off < pt.next }

// record checks the record at off, fetched at now (Unix ns).
func (pt *partitionCheck) record(off int64, v []byte, now int64) {
	if pt.next >= 0 && off > pt.next {
		pt.gaps++
	}
	pt.next = off + 1
	intended, prod, seq, ok := ReadStamp(v)
	switch {
	case !ok || int(prod) >= pt.c.group.producers:
		pt.foreign++
		return
	case intended < pt.c.runStart:
		pt.stale++
		return
	}
	if int64(seq) <= pt.last[prod] {
		pt.ooo++
	}
	pt.last[prod] = int64(seq)
	pt.n++
	pt.bytes += int64(len(v))
	if intended >= pt.measureFrom {
		pt.c.e2e.RecordLocked(now - intended)
	}
}

// end records where the partition stands and releases the group's lock.
func (pt *partitionCheck) end() {
	g := pt.c.group
	g.nextOffset[pt.idx] = pt.next
	g.mu.Unlock()
	g.consumed.Add(pt.n)
	g.consumedBytes.Add(pt.bytes)
	for _, v := range []struct {
		counter *atomic.Int64
		n       int64
	}{{&g.outOfOrder, pt.ooo}, {&g.offsetGaps, pt.gaps}, {&g.stale, pt.stale}, {&g.foreign, pt.foreign}} {
		if v.n > 0 {
			v.counter.Add(v.n)
		}
	}
}
