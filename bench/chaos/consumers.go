package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// The readers that run through the faults: the live consumer (every partition assigned, checking what it
// reads against what it read before) and the consumer group (checking it sees every acknowledged record).

// liveConsumer reads every partition from the start while faults happen and remembers a hash
// of what it saw at each offset: a record read once and later gone is a divergent read. It also
// notes when the client goes back to an offset it already read (an offset reset after an
// OFFSET_OUT_OF_RANGE, for instance): harmless here, records lost with auto.offset.reset=latest.
type liveConsumer struct {
	start   time.Time
	seen    []map[int64]uint64
	next    []int64
	count   atomic.Int64
	rereads atomic.Int64
	jumps   []string
	errs    map[string]int
}

func (lc *liveConsumer) run(ctx context.Context, cl *kgo.Client) {
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return
		}
		fs.EachError(func(t string, p int32, err error) {
			lc.errs[fmt.Sprintf("partition %d: %v", p, err)]++
		})
		fs.EachPartition(func(ftp kgo.FetchTopicPartition) {
			p := ftp.Partition
			for _, rec := range ftp.Records {
				if rec.Offset < lc.next[p] {
					lc.rereads.Add(1)
				}
				lc.seen[p][rec.Offset] = hashValue(rec.Value)
				lc.count.Add(1)
			}
			if n := len(ftp.Records); n > 0 {
				first, last := ftp.Records[0].Offset, ftp.Records[n-1].Offset
				if first < lc.next[p] || first > lc.next[p] {
					kind := "back"
					if first > lc.next[p] {
						kind = "forward"
					}
					if len(lc.jumps) < 100 {
						lc.jumps = append(lc.jumps, fmt.Sprintf("%.1fs partition %d: jumped %s from offset %d to %d",
							time.Since(lc.start).Seconds(), p, kind, lc.next[p], first))
					}
				}
				lc.next[p] = last + 1
			}
		})
	}
}

// groupConsumer reads with a consumer group (auto-commit) and records which values it saw.
// Re-reads are expected after a rebalance (back to the last commit, at most about a second of
// records here); it notes how far back each restart went.
type groupConsumer struct {
	start   time.Time
	mu      sync.Mutex
	seen    map[key]struct{}
	next    map[int32]int64
	count   atomic.Int64
	rereads atomic.Int64
	jumps   []string
}

func (gc *groupConsumer) run(ctx context.Context, cl *kgo.Client) {
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return
		}
		gc.mu.Lock()
		fs.EachPartition(func(ftp kgo.FetchTopicPartition) {
			p := ftp.Partition
			for _, rec := range ftp.Records {
				if k, ok := decodeValue(rec.Value); ok {
					gc.seen[k] = struct{}{}
				}
				gc.count.Add(1)
				if next, ok := gc.next[p]; ok && rec.Offset < next {
					gc.rereads.Add(1)
				}
			}
			if n := len(ftp.Records); n > 0 {
				first := ftp.Records[0].Offset
				if next, ok := gc.next[p]; ok && first != next && len(gc.jumps) < 200 {
					gc.jumps = append(gc.jumps, fmt.Sprintf("%.1fs partition %d: from offset %d to %d (%+d)",
						time.Since(gc.start).Seconds(), p, next, first, first-next))
				}
				gc.next[p] = max(gc.next[p], ftp.Records[n-1].Offset+1)
			}
		})
		gc.mu.Unlock()
	}
}

// chaosConsumers are the readers that run through the faults: the live consumer (every partition
// assigned) and, with -group, a consumer group. Their clients log to the data directory.
type chaosConsumers struct {
	live    *liveConsumer
	group   *groupConsumer
	stop    context.CancelFunc
	wg      sync.WaitGroup
	closers []func() error
}

func startConsumers(cfg config, c *cluster) (*chaosConsumers, error) {
	ctx, stop := context.WithCancel(context.Background())
	cs := &chaosConsumers{stop: stop}
	lc := &liveConsumer{start: time.Now(), seen: make([]map[int64]uint64, cfg.partitions), next: make([]int64, cfg.partitions), errs: map[string]int{}}
	cs.live = lc
	cs.group = &groupConsumer{start: lc.start, seen: map[key]struct{}{}, next: map[int32]int64{}}
	offsets := map[int32]kgo.Offset{}
	for p := range cfg.partitions {
		offsets[int32(p)] = kgo.NewOffset().AtStart()
		lc.seen[p] = map[int64]uint64{}
	}
	opts := []kgo.Opt{kgo.SeedBrokers(c.addrs()...),
		kgo.RequestTimeoutOverhead(2 * time.Second), kgo.DialTimeout(time.Second),
		kgo.MetadataMinAge(100 * time.Millisecond), kgo.FetchMaxWait(200 * time.Millisecond)}
	liveCl, err := cs.client(filepath.Join(cfg.dataDir, "live-consumer.log"),
		append(opts, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{cfg.topic: offsets}))...)
	if err != nil {
		return cs, err
	}
	cs.wg.Add(1)
	go func() { defer cs.wg.Done(); lc.run(ctx, liveCl) }()
	if !cfg.group {
		return cs, nil
	}
	groupCl, err := cs.client(filepath.Join(cfg.dataDir, "group-consumer.log"), append(opts,
		kgo.ConsumerGroup("chaos-group"), kgo.ConsumeTopics(cfg.topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.AutoCommitInterval(time.Second))...)
	if err != nil {
		return cs, err
	}
	cs.wg.Add(1)
	go func() { defer cs.wg.Done(); cs.group.run(ctx, groupCl) }()
	return cs, nil
}

// client opens a consumer client logging (info level) to logPath; close closes both.
func (cs *chaosConsumers) client(logPath string, opts ...kgo.Opt) (*kgo.Client, error) {
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cs.closers = append(cs.closers, lf.Close)
	cl, err := kgo.NewClient(append(opts, kgo.WithLogger(kgo.BasicLogger(lf, kgo.LogLevelInfo, nil)))...)
	if err != nil {
		return nil, err
	}
	cs.closers = append(cs.closers, func() error { cl.Close(); return nil })
	return cl, nil
}

// stopReading stops the consumers and waits until they have returned.
func (cs *chaosConsumers) stopReading() {
	cs.stop()
	cs.wg.Wait()
}

func (cs *chaosConsumers) close() {
	cs.stopReading()
	for i := len(cs.closers) - 1; i >= 0; i-- {
		cs.closers[i]()
	}
}

// waitFor waits up to d until the group has read every acknowledged record and returns how many
// it has not.
func (gc *groupConsumer) waitFor(acks map[key]int64, d time.Duration) (missing int64) {
	deadline := time.Now().Add(d)
	for {
		gc.mu.Lock()
		missing = 0
		for k := range acks {
			if _, ok := gc.seen[k]; !ok {
				missing++
			}
		}
		gc.mu.Unlock()
		if missing == 0 || !time.Now().Before(deadline) {
			return missing
		}
		time.Sleep(2 * time.Second)
	}
}

// divergentReads counts what the live consumer saw at an offset that the final log does not hold
// (or holds differently), with up to 20 examples.
func (lc *liveConsumer) divergentReads(sum *chaosSummary, final *finalLog) {
	for p, m := range lc.seen {
		for off, h := range m {
			v, ok := final.hash[p][off]
			if !ok || v != h {
				sum.DivergentReads++
				if len(sum.Examples) < 20 {
					sum.Examples = append(sum.Examples, fmt.Sprintf("divergent read: partition %d offset %d seen live, final log has it: %v", p, off, ok))
				}
			}
		}
	}
}
