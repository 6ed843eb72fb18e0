package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicebroker/sluice/internal/testcluster"
)

// partTrack measures one partition's availability as seen by the producers: the longest time
// between two successive acknowledgements while producers kept sending to it.
type partTrack struct {
	mu       sync.Mutex
	last     time.Time
	maxGap   time.Duration
	maxGapAt time.Time
	acked    int64
}

func (pt *partTrack) ack(t time.Time) {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	pt.acked++
	if t.After(pt.last) {
		if g := t.Sub(pt.last); g > pt.maxGap {
			pt.maxGap, pt.maxGapAt = g, pt.last
		}
		pt.last = t
	}
}

type faultEvent struct {
	AtS         float64 `json:"at_s"`
	Broker      int32   `json:"broker"`
	Action      string  `json:"action"`
	DownMs      int64   `json:"down_ms"`
	LeaderOf    []int32 `json:"leader_of"`
	HealthyMs   int64   `json:"healthy_after_ms"`
	HealthyNote string  `json:"healthy_note,omitempty"`
}

type partSummary struct {
	Partition            int32   `json:"partition"`
	Acknowledged         int64   `json:"acknowledged"`
	LogRecords           int64   `json:"log_records"`
	LongestUnavailableMs int64   `json:"longest_unavailable_ms"`
	UnavailableFromS     float64 `json:"unavailable_from_s"`
	DuringFault          string  `json:"during_fault,omitempty"`
}

type chaosSummary struct {
	Mode          string         `json:"mode"`
	Seed          uint64         `json:"seed"`
	Brokers       int            `json:"brokers"`
	Partitions    int            `json:"partitions"`
	Replication   int            `json:"replication_factor"`
	Rate          float64        `json:"rate"`
	Producers     int            `json:"producers"`
	FaultSeconds  float64        `json:"fault_seconds"`
	Faults        []faultEvent   `json:"faults"`
	LeaderChanges []leaderChange `json:"leader_changes"`
	// Polls (every 200 ms) in which two brokers named different leaders for a partition.
	MetadataDisagreements int64          `json:"metadata_disagreements"`
	FaultCounts           map[string]int `json:"fault_counts"`
	Attempted             int64          `json:"attempted"`
	Acknowledged          int64          `json:"acknowledged"`
	Failed                int64          `json:"failed"`
	FailedErrors          map[string]int `json:"failed_errors,omitempty"`
	Skipped               int64          `json:"skipped_backpressure"`
	Lost                  int64          `json:"lost"`
	LostMissing           int64          `json:"lost_missing"`
	LostMoved             int64          `json:"lost_moved"`
	Duplicated            int64          `json:"duplicated"`
	Reordered             int64          `json:"reordered"`
	Invalid               int64          `json:"invalid_values"`
	UnackedPresent        int64          `json:"unacknowledged_but_present"`
	LogRecords            int64          `json:"log_records"`
	LiveConsumed          int64          `json:"live_consumed"`
	LiveRereads           int64          `json:"live_rereads"`
	LiveJumps             []string       `json:"live_jumps,omitempty"`
	LiveErrors            map[string]int `json:"live_fetch_errors,omitempty"`
	DivergentReads        int64          `json:"divergent_reads"`
	GroupConsumed         int64          `json:"group_consumed"`
	GroupMissing          int64          `json:"group_missing"`
	GroupRereads          int64          `json:"group_rereads"`
	GroupJumps            []string       `json:"group_jumps,omitempty"`
	PerPartition          []partSummary  `json:"per_partition"`
	Examples              []string       `json:"examples,omitempty"`
	Pass                  bool           `json:"pass"`
}

type chaosRun struct {
	cfg   config
	c     *cluster
	start time.Time

	mu       sync.Mutex
	acks     map[key]int64 // acknowledged offset per record
	failErrs map[string]int

	attempted, failed, skipped atomic.Int64
	parts                      []*partTrack
}

func producerClient(cfg config, c *cluster, extra ...kgo.Opt) (*kgo.Client, error) {
	opts := []kgo.Opt{
		kgo.SeedBrokers(c.addrs()...),
		kgo.DefaultProduceTopic(cfg.topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(2 * time.Millisecond),
		// A paused leader keeps its sockets open; without short timeouts a request to it hangs
		// for the client's default 10 s + 10 s, which is the client's unavailability, not the cluster's.
		kgo.ProduceRequestTimeout(3 * time.Second),
		kgo.RequestTimeoutOverhead(2 * time.Second),
		kgo.DialTimeout(time.Second),
		kgo.MetadataMinAge(100 * time.Millisecond),
		kgo.RetryBackoffFn(func(int) time.Duration { return 50 * time.Millisecond }),
	}
	return kgo.NewClient(append(opts, extra...)...)
}

const maxInflightPerPartition = 2000

// produce sends cfg.rate/cfg.producers records/s round-robin over the partitions until stop is
// closed. A partition with too many records in flight is skipped (counted) instead of blocking,
// so one unavailable partition does not starve the others of attempts.
func (r *chaosRun) produce(id int, cl *kgo.Client, stop <-chan struct{}) {
	n := r.cfg.partitions
	seq := make([]uint32, n)
	inflight := make([]atomic.Int32, n)
	perSec := r.cfg.rate / float64(r.cfg.producers)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	last := time.Now()
	credit := 0.0
	p := id % n
	for {
		select {
		case <-stop:
			return
		case now := <-tick.C:
			credit += perSec * now.Sub(last).Seconds()
			last = now
		}
		for ; credit >= 1; credit-- {
			p = (p + 1) % n
			if inflight[p].Load() >= maxInflightPerPartition {
				r.skipped.Add(1)
				continue
			}
			seq[p]++
			k := key{uint16(id), int32(p), seq[p]}
			inflight[p].Add(1)
			r.attempted.Add(1)
			part := p
			cl.Produce(context.Background(), &kgo.Record{Partition: int32(p), Value: encodeValue(k, r.cfg.recordSize)},
				func(rec *kgo.Record, err error) {
					inflight[part].Add(-1)
					if err != nil {
						r.failed.Add(1)
						r.mu.Lock()
						r.failErrs[err.Error()]++
						r.mu.Unlock()
						return
					}
					r.parts[part].ack(time.Now())
					r.mu.Lock()
					r.acks[k] = rec.Offset
					r.mu.Unlock()
				})
		}
	}
}

func runChaos(ctx context.Context, cfg config, c *cluster, rng *rand.Rand) (*chaosSummary, error) {
	adm, admCl, err := startAll(ctx, cfg, c)
	if err != nil {
		return nil, err
	}
	defer admCl.Close()

	r := &chaosRun{cfg: cfg, c: c, acks: map[key]int64{}, failErrs: map[string]int{}}
	for range cfg.partitions {
		r.parts = append(r.parts, &partTrack{})
	}
	sum := &chaosSummary{Mode: "chaos", Seed: cfg.seed, Brokers: cfg.brokers, Partitions: cfg.partitions,
		Replication: cfg.rf, Rate: cfg.rate, Producers: cfg.producers, FaultCounts: map[string]int{}}

	// Consumers first, so they are fetching when faults begin.
	cons, err := startConsumers(cfg, c)
	defer cons.close()
	if err != nil {
		return nil, err
	}
	lc, gc := cons.live, cons.group
	clients, closeProducers, err := openProducers(cfg, c)
	defer closeProducers()
	if err != nil {
		return nil, err
	}
	r.start = time.Now()
	for _, pt := range r.parts {
		pt.last = r.start
	}
	stopProd := make(chan struct{})
	var prodWG sync.WaitGroup
	for i, cl := range clients {
		prodWG.Add(1)
		go func() { defer prodWG.Done(); r.produce(i, cl, stopProd) }()
	}
	stopProgress := r.logProgress(lc, gc)
	stopWatch := watchLeaders(admCl, c, cfg.topic, r.start)

	// Faults, one broker at a time, until the deadline.
	deadline := r.start.Add(cfg.duration)
	faultCtx, cancelFaults := context.WithDeadline(ctx, deadline)
	sum.Faults = r.faultLoop(faultCtx, adm, rng)
	cancelFaults()
	for _, f := range sum.Faults {
		sum.FaultCounts[f.Action]++
	}
	sum.FaultSeconds = time.Since(r.start).Seconds()

	if err := heal(adm, cfg, c); err != nil {
		return nil, err
	}
	close(stopProd)
	prodWG.Wait()
	stopTime := time.Now()
	fctx, fcancel := context.WithTimeout(context.Background(), 60*time.Second)
	for _, cl := range clients {
		if err := cl.Flush(fctx); err != nil {
			log.Printf("flush: %v (unacknowledged records count as not acknowledged)", err)
		}
	}
	fcancel()
	stopProgress()
	sum.LeaderChanges, sum.MetadataDisagreements = stopWatch()
	sum.PerPartition = r.partitionSummaries(stopTime, sum.Faults)

	r.mu.Lock()
	acks := r.acks
	sum.FailedErrors = r.failErrs
	r.mu.Unlock()
	sum.Attempted, sum.Acknowledged, sum.Failed, sum.Skipped = r.attempted.Load(), int64(len(acks)), r.failed.Load(), r.skipped.Load()

	// Read everything back with a fresh client.
	log.Printf("reading every partition back")
	final, err := readAll(adm, c, cfg)
	if err != nil {
		return sum, err
	}
	verify(sum, acks, final, cfg)

	// Divergent reads: the live consumer saw something at an offset that the final log does not have.
	if cfg.group {
		sum.GroupMissing = gc.waitFor(acks, 60*time.Second) // give the group time to reach the end
	}
	time.Sleep(time.Second)
	cons.stopReading()
	sum.LiveConsumed, sum.GroupConsumed = lc.count.Load(), gc.count.Load()
	sum.LiveRereads, sum.LiveJumps, sum.LiveErrors = lc.rereads.Load(), lc.jumps, lc.errs
	gc.mu.Lock()
	sum.GroupRereads, sum.GroupJumps = gc.rereads.Load(), gc.jumps
	gc.mu.Unlock()
	lc.divergentReads(sum, final)
	sum.Pass = sum.Lost == 0 && sum.Duplicated == 0 && sum.Reordered == 0 && sum.Invalid == 0
	printChaos(sum)
	if !sum.Pass {
		return sum, errors.New("records lost, duplicated or reordered")
	}
	return sum, nil
}

// openProducers opens the producers' clients. Their own log (info level, in the data directory)
// shows where an unavailable partition's time goes: metadata refreshes, retried produce errors,
// requests to a broker that does not answer. closeAll closes the clients and their logs.
func openProducers(cfg config, c *cluster) (clients []*kgo.Client, closeAll func(), err error) {
	var logs []*os.File
	closeAll = func() {
		for _, cl := range clients {
			cl.Close()
		}
		for _, f := range logs {
			f.Close()
		}
	}
	for i := range cfg.producers {
		prodLog, err := os.Create(filepath.Join(cfg.dataDir, fmt.Sprintf("producer-%d.log", i)))
		if err != nil {
			return clients, closeAll, err
		}
		logs = append(logs, prodLog)
		cl, err := producerClient(cfg, c, kgo.MaxBufferedRecords(cfg.partitions*maxInflightPerPartition+1000),
			kgo.WithLogger(kgo.BasicLogger(prodLog, kgo.LogLevelInfo, func() string {
				return time.Now().UTC().Format("15:04:05.000000 ")
			})))
		if err != nil {
			return clients, closeAll, err
		}
		clients = append(clients, cl)
	}
	return clients, closeAll, nil
}

// logProgress logs the run's counts every 10 s until the returned stop is called.
func (r *chaosRun) logProgress(lc *liveConsumer, gc *groupConsumer) (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				r.mu.Lock()
				acked := len(r.acks)
				r.mu.Unlock()
				log.Printf("progress %4.0fs: attempted %d, acked %d, failed %d, skipped %d, live consumed %d, group consumed %d",
					time.Since(r.start).Seconds(), r.attempted.Load(), acked, r.failed.Load(), r.skipped.Load(), lc.count.Load(), gc.count.Load())
			}
		}
	}()
	return func() { close(done) }
}

// heal gets every broker running and resumed, and waits (up to 90 s) for every partition to have a
// full ISR; the run is checked either way.
func heal(adm *kadm.Client, cfg config, c *cluster) error {
	log.Printf("healing the cluster")
	for _, b := range c.brokers {
		b.Signal(syscall.SIGCONT)
		if !b.Running() {
			if err := c.launch(ctx60(), b); err != nil {
				return err
			}
		}
	}
	hctx, hcancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer hcancel()
	if err := waitHealthy(hctx, adm, cfg.topic, cfg.brokers, cfg.partitions, false); err != nil {
		log.Printf("after healing: %v (checking anyway)", err)
	}
	return nil
}

// partitionSummaries gives each partition's longest gap between acknowledgements and the fault it
// fell in; a gap still open at the end counts up to stopTime, when producing stopped.
func (r *chaosRun) partitionSummaries(stopTime time.Time, faults []faultEvent) []partSummary {
	var out []partSummary
	for p, pt := range r.parts {
		pt.mu.Lock()
		if g := stopTime.Sub(pt.last); g > pt.maxGap {
			pt.maxGap, pt.maxGapAt = g, pt.last
		}
		ps := partSummary{Partition: int32(p), Acknowledged: pt.acked,
			LongestUnavailableMs: pt.maxGap.Milliseconds(), UnavailableFromS: round1(pt.maxGapAt.Sub(r.start).Seconds())}
		pt.mu.Unlock()
		ps.DuringFault = faultAt(faults, ps.UnavailableFromS, float64(ps.LongestUnavailableMs)/1000)
		out = append(out, ps)
	}
	return out
}

func round1(f float64) float64 { return float64(int64(f*10+0.5)) / 10 }

// faultAt names the fault in progress when a gap started (or the one just before it).
func faultAt(faults []faultEvent, at, dur float64) string {
	best := ""
	for _, f := range faults {
		end := f.AtS + float64(f.DownMs+f.HealthyMs)/1000
		if f.AtS <= at+dur && end+1 >= at {
			best = fmt.Sprintf("%s broker %d at %.1fs", f.Action, f.Broker, f.AtS)
		}
	}
	return best
}

func (r *chaosRun) faultLoop(ctx context.Context, adm *kadm.Client, rng *rand.Rand) []faultEvent {
	var actions []string
	for _, a := range []string{"kill", "pause", "restart"} {
		for range r.cfg.faults[a] {
			actions = append(actions, a)
		}
	}
	var events []faultEvent
	if len(actions) == 0 {
		<-ctx.Done()
		return events
	}
	for {
		if !sleepCtx(ctx, randDur(rng, r.cfg.gapMin, r.cfg.gapMax)) {
			return events
		}
		b := r.c.brokers[rng.IntN(len(r.c.brokers))]
		act := actions[rng.IntN(len(actions))]
		ev := faultEvent{AtS: round1(time.Since(r.start).Seconds()), Broker: b.ID, Action: act}
		if st, _, err := topicState(context.Background(), adm, r.cfg.topic); err == nil {
			for p, ps := range st {
				if ps.leader == b.ID {
					ev.LeaderOf = append(ev.LeaderOf, p)
				}
			}
			slices.Sort(ev.LeaderOf)
		}
		down := randDur(rng, r.cfg.downMin, r.cfg.downMax)
		t0 := time.Now()
		switch act {
		case "kill":
			b.Stop(syscall.SIGKILL, 10*time.Second)
			time.Sleep(down)
			if err := r.c.launch(ctx60(), b); err != nil {
				log.Printf("restart broker %d: %v", b.ID, err)
			}
		case "pause":
			b.Signal(syscall.SIGSTOP)
			time.Sleep(down)
			b.Signal(syscall.SIGCONT)
		case "restart":
			b.Stop(syscall.SIGTERM, 30*time.Second)
			if err := r.c.launch(ctx60(), b); err != nil {
				log.Printf("restart broker %d: %v", b.ID, err)
			}
		}
		ev.DownMs = time.Since(t0).Milliseconds()
		// The fault is over when the broker is back in every ISR: only then may the next one
		// start, so a majority of every partition's replicas is always up and caught up.
		t1 := time.Now()
		hctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
		err := testcluster.WaitListening(hctx, b.Addr)
		if err == nil {
			err = waitHealthy(hctx, adm, r.cfg.topic, r.cfg.brokers, r.cfg.partitions, false)
		}
		cancel()
		ev.HealthyMs = time.Since(t1).Milliseconds()
		if err != nil {
			ev.HealthyNote = err.Error()
		}
		log.Printf("fault at %5.1fs: %-7s broker %d (leader of %v) for %d ms; healthy %d ms later %s",
			ev.AtS, act, b.ID, ev.LeaderOf, ev.DownMs, ev.HealthyMs, ev.HealthyNote)
		events = append(events, ev)
	}
}

func printChaos(s *chaosSummary) {
	fmt.Printf("\nchaos run: seed %d, %d brokers, %d partitions rf=%d, %.0f records/s from %d producers, faults for %.0f s\n",
		s.Seed, s.Brokers, s.Partitions, s.Replication, s.Rate, s.Producers, s.FaultSeconds)
	fmt.Printf("faults: %d (kill %d, pause %d, restart %d)\n", len(s.Faults), s.FaultCounts["kill"], s.FaultCounts["pause"], s.FaultCounts["restart"])
	fmt.Printf("attempted      %d\n", s.Attempted)
	fmt.Printf("acknowledged   %d\n", s.Acknowledged)
	fmt.Printf("failed         %d (not acknowledged; may or may not be in the log)\n", s.Failed)
	fmt.Printf("skipped        %d (partition had %d records in flight)\n", s.Skipped, maxInflightPerPartition)
	fmt.Printf("lost           %d (missing %d, at another offset %d)\n", s.Lost, s.LostMissing, s.LostMoved)
	fmt.Printf("duplicated     %d\n", s.Duplicated)
	fmt.Printf("reordered      %d\n", s.Reordered)
	fmt.Printf("invalid        %d\n", s.Invalid)
	fmt.Printf("log records    %d (%d present but never acknowledged)\n", s.LogRecords, s.UnackedPresent)
	fmt.Printf("metadata       %d polls in which two brokers named different leaders for a partition\n", s.MetadataDisagreements)
	fmt.Printf("live consumer  %d records read, %d divergent reads (seen, then gone or changed), %d re-read after going back\n", s.LiveConsumed, s.DivergentReads, s.LiveRereads)
	for _, j := range s.LiveJumps[:min(len(s.LiveJumps), 10)] {
		fmt.Println("  live consumer " + j)
	}
	fmt.Printf("group consumer %d records read, %d acknowledged records never seen, %d re-read (%d restarts at another offset)\n", s.GroupConsumed, s.GroupMissing, s.GroupRereads, len(s.GroupJumps))
	fmt.Println("partition  acked    log      longest-unavailable  from     during")
	for _, p := range s.PerPartition {
		fmt.Printf("%-10d %-8d %-8d %-20s %-8s %s\n", p.Partition, p.Acknowledged, p.LogRecords,
			(time.Duration(p.LongestUnavailableMs) * time.Millisecond).String(), fmt.Sprintf("%.1fs", p.UnavailableFromS), p.DuringFault)
	}
	if len(s.FailedErrors) > 0 {
		fmt.Println("produce errors:")
		for e, n := range s.FailedErrors {
			fmt.Printf("  %6d  %s\n", n, e)
		}
	}
	for _, e := range s.Examples {
		fmt.Println("  " + e)
	}
	if s.Pass {
		fmt.Println("PASS")
	} else {
		fmt.Println("FAIL")
	}
}

// ctx60 bounds a broker (re)start: long enough for a loaded machine, short enough to notice a
// broker that cannot start at all.
func ctx60() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	time.AfterFunc(61*time.Second, cancel)
	return ctx
}
