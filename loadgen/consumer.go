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
	idx := ti*g.partitions + int(p.Partition)
	var n, bytes, ooo, gaps, stale, foreign int64
	measureFrom := c.measureFrom.Load()
	g.mu.Lock()
	last := g.lastSeq[idx]
	next := g.nextOffset[idx]
	for _, r := range p.Records {
		if next >= 0 && r.Offset > next {
			gaps++
		}
		next = r.Offset + 1
		intended, prod, seq, ok := ReadStamp(r.Value)
		switch {
		case !ok || int(prod) >= g.producers:
			foreign++
			continue
		case intended < c.runStart:
			stale++
			continue
		}
		if int64(seq) <= last[prod] {
			ooo++
		}
		last[prod] = int64(seq)
		n++
		bytes += int64(len(r.Value))
		if intended >= measureFrom {
			c.e2e.RecordLocked(now - intended)
		}
	}
	g.nextOffset[idx] = next
	g.mu.Unlock()
	g.consumed.Add(n)
	g.consumedBytes.Add(bytes)
	if ooo > 0 {
		g.outOfOrder.Add(ooo)
	}
	if gaps > 0 {
		g.offsetGaps.Add(gaps)
	}
	if stale > 0 {
		g.stale.Add(stale)
	}
	if foreign > 0 {
		g.foreign.Add(foreign)
	}
}
