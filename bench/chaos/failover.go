package main

import (
	"context"
	"fmt"
	"log"
	"math/rand/v2"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

type killResult struct {
	N         int     `json:"n"`
	Partition int32   `json:"partition"`
	OldLeader int32   `json:"old_leader"`
	NewLeader int32   `json:"new_leader"`
	ProduceMs float64 `json:"produce_ms"`  // kill -> first acks=all produce acknowledged by the new leader
	MetaMs    float64 `json:"metadata_ms"` // kill -> Metadata names another live leader
	ViewMs    float64 `json:"view_ms"`     // kill -> some surviving broker, asked directly, names the new leader
	BackMs    float64 `json:"back_ms"`     // restart -> full ISR and preferred leader again
	Error     string  `json:"error,omitempty"`
}

type stats struct {
	N      int     `json:"n"`
	Median float64 `json:"median_ms"`
	P90    float64 `json:"p90_ms"`
	Max    float64 `json:"max_ms"`
	Min    float64 `json:"min_ms"`
}

func statsOf(v []float64) stats {
	if len(v) == 0 {
		return stats{}
	}
	s := slices.Clone(v)
	slices.Sort(s)
	// Nearest-rank percentiles: the value at or below which the given share of kills fall.
	rank := func(q float64) float64 {
		i := int(q*float64(len(s))+0.999999) - 1
		return s[max(0, min(i, len(s)-1))]
	}
	return stats{N: len(s), Median: rank(0.5), P90: rank(0.9), Max: s[len(s)-1], Min: s[0]}
}

type failoverSummary struct {
	Mode       string       `json:"mode"`
	Seed       uint64       `json:"seed"`
	Brokers    int          `json:"brokers"`
	Partitions int          `json:"partitions"`
	Kills      []killResult `json:"kills"`
	Produce    stats        `json:"produce"`
	Metadata   stats        `json:"metadata"`
	View       stats        `json:"view"`
	Back       stats        `json:"back"`
	Failed     int          `json:"failed_kills"`
}

// probe produces to one partition every 2 ms and reports the first acknowledgement of a
// record enqueued after armedAt: enqueued after the old leader's process was gone, it can only
// have been acknowledged by a new leader.
type probe struct {
	mu      sync.Mutex
	armedAt time.Time
	first   time.Time
	got     chan struct{}
}

func runProbe(ctx context.Context, cl *kgo.Client, part int32, pr *probe) {
	sem := make(chan struct{}, 200)
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		select {
		case sem <- struct{}{}:
		default:
			continue // enough in flight
		}
		enq := time.Now()
		cl.Produce(context.Background(), &kgo.Record{Partition: part, Value: []byte("probe")}, func(_ *kgo.Record, err error) {
			<-sem
			if err != nil {
				return
			}
			now := time.Now()
			pr.mu.Lock()
			defer pr.mu.Unlock()
			if !pr.armedAt.IsZero() && enq.After(pr.armedAt) && pr.first.IsZero() {
				pr.first = now
				close(pr.got)
			}
		})
	}
}

func runFailover(ctx context.Context, cfg config, c *cluster, rng *rand.Rand) (*failoverSummary, error) {
	adm, admCl, err := startAll(ctx, cfg, c)
	if err != nil {
		return nil, err
	}
	defer admCl.Close()
	sum := &failoverSummary{Mode: "failover", Seed: cfg.seed, Brokers: cfg.brokers, Partitions: cfg.partitions}
	var prod, meta, view, back []float64
	for i := range cfg.kills {
		if ctx.Err() != nil {
			break
		}
		// Rotate over partitions: preferred leaders differ, so every broker gets killed.
		part := int32(i % cfg.partitions)
		kr := killFor(ctx, cfg, c, adm, part, i+1)
		sum.Kills = append(sum.Kills, kr)
		if kr.Error != "" {
			sum.Failed++
		} else {
			prod, meta, view, back = append(prod, kr.ProduceMs), append(meta, kr.MetaMs), append(view, kr.ViewMs), append(back, kr.BackMs)
		}
		log.Printf("kill %2d: partition %d leader %d -> %d: produce %.0f ms, metadata %.0f ms (a survivor's own view %.0f ms), back in %.0f ms %s",
			kr.N, kr.Partition, kr.OldLeader, kr.NewLeader, kr.ProduceMs, kr.MetaMs, kr.ViewMs, kr.BackMs, kr.Error)
		sleepCtx(ctx, randDur(rng, 500*time.Millisecond, 1500*time.Millisecond))
	}
	sum.Produce, sum.Metadata, sum.View, sum.Back = statsOf(prod), statsOf(meta), statsOf(view), statsOf(back)
	fmt.Printf("\nleader failover: %d kills (%d failed), %d brokers, %d partitions rf=%d\n", len(sum.Kills), sum.Failed, cfg.brokers, cfg.partitions, cfg.rf)
	for _, r := range []struct {
		name string
		s    stats
	}{{"kill -> first acks=all produce on the new leader", sum.Produce}, {"kill -> metadata names the new leader", sum.Metadata}, {"kill -> a survivor's own metadata names it", sum.View}, {"restart -> full ISR + preferred leader back", sum.Back}} {
		fmt.Printf("%-50s median %6.0f ms  p90 %6.0f ms  max %6.0f ms  min %6.0f ms\n", r.name, r.s.Median, r.s.P90, r.s.Max, r.s.Min)
	}
	if sum.Failed > 0 {
		return sum, fmt.Errorf("%d kills did not fail over", sum.Failed)
	}
	return sum, nil
}

func killFor(ctx context.Context, cfg config, c *cluster, adm *kadm.Client, part int32, n int) killResult {
	kr := killResult{N: n, Partition: part, NewLeader: -1}
	hctx, hcancel := context.WithTimeout(ctx, 60*time.Second)
	defer hcancel()
	if err := waitHealthy(hctx, adm, cfg.topic, cfg.brokers, cfg.partitions, true); err != nil {
		kr.Error = err.Error()
		return kr
	}
	st, _, err := topicState(ctx, adm, cfg.topic)
	if err != nil {
		kr.Error = err.Error()
		return kr
	}
	kr.OldLeader = st[part].leader
	victim := c.byID(kr.OldLeader)
	if victim == nil {
		kr.Error = fmt.Sprintf("no broker %d", kr.OldLeader)
		return kr
	}

	cl, err := producerClient(cfg, c,
		kgo.ProducerLinger(0),
		kgo.MetadataMinAge(20*time.Millisecond),
		kgo.RetryBackoffFn(func(int) time.Duration { return 10 * time.Millisecond }))
	if err != nil {
		kr.Error = err.Error()
		return kr
	}
	defer cl.Close()
	pctx, pcancel := context.WithCancel(ctx)
	defer pcancel()
	// Warm up: producer id, connections and metadata in place before the kill.
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	err = cl.ProduceSync(wctx, &kgo.Record{Partition: part, Value: []byte("warm-up")}).FirstErr()
	wcancel()
	if err != nil {
		kr.Error = "warm-up: " + err.Error()
		return kr
	}
	pr := &probe{got: make(chan struct{})}
	go runProbe(pctx, cl, part, pr)
	time.Sleep(200 * time.Millisecond)

	tKill := time.Now()
	victim.Stop(syscall.SIGKILL, 10*time.Second)
	tDead := time.Now()
	pr.mu.Lock()
	pr.armedAt = tDead
	pr.mu.Unlock()

	// Metadata: the first answer naming another leader.
	metaDone := make(chan struct{})
	go func() {
		defer close(metaDone)
		for time.Since(tKill) < 30*time.Second {
			if st, _, err := topicState(ctx, adm, cfg.topic); err == nil {
				if l := st[part].leader; l >= 0 && l != kr.OldLeader {
					kr.MetaMs = ms(time.Since(tKill))
					kr.NewLeader = l
					return
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	// Each survivor's own answer (its local Raft replica, when its term is at least the
	// controller's): tells a slow election from a slow path to the client's Metadata.
	viewDone := make(chan struct{})
	go func() {
		defer close(viewDone)
		for time.Since(tKill) < 30*time.Second {
			for _, b := range c.brokers {
				if b == victim {
					continue
				}
				if l, _, _, err := partitionViewOf(ctx, cl, b.ID, cfg.topic, part); err == nil && l >= 0 && l != kr.OldLeader {
					kr.ViewMs = ms(time.Since(tKill))
					return
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	select {
	case <-pr.got:
		pr.mu.Lock()
		kr.ProduceMs = ms(pr.first.Sub(tKill))
		pr.mu.Unlock()
	case <-time.After(30 * time.Second):
		kr.Error = "no acknowledgement within 30 s of the kill"
	}
	<-metaDone
	<-viewDone
	pcancel()

	tRestart := time.Now()
	if err := c.launch(ctx60(), victim); err != nil {
		kr.Error = err.Error()
		return kr
	}
	bctx, bcancel := context.WithTimeout(ctx, 60*time.Second)
	defer bcancel()
	if err := waitHealthy(bctx, adm, cfg.topic, cfg.brokers, cfg.partitions, true); err != nil {
		kr.Error = "after restart: " + err.Error()
		return kr
	}
	kr.BackMs = ms(time.Since(tRestart))
	return kr
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
