package main

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicebroker/sluice/internal/testcluster"
)

// key identifies one produced record: producer, partition and that producer's sequence number
// within the partition (1, 2, 3, ...). Every value starts with it, so the final log can be
// checked without keeping values around.
type key struct {
	prod uint16
	part int32
	seq  uint32
}

func encodeValue(k key, size int) []byte {
	b := fmt.Appendf(nil, "%d/%d/%d/", k.prod, k.part, k.seq)
	for len(b) < size {
		b = append(b, '.')
	}
	return b
}

func decodeValue(v []byte) (key, bool) {
	f := strings.SplitN(string(v[:min(len(v), 40)]), "/", 4)
	if len(f) < 4 {
		return key{}, false
	}
	prod, e1 := strconv.ParseUint(f[0], 10, 16)
	part, e2 := strconv.ParseInt(f[1], 10, 32)
	seq, e3 := strconv.ParseUint(f[2], 10, 32)
	if e1 != nil || e2 != nil || e3 != nil {
		return key{}, false
	}
	return key{uint16(prod), int32(part), uint32(seq)}, true
}

func hashValue(v []byte) uint64 {
	h := fnv.New64a()
	h.Write(v)
	return h.Sum64()
}

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

// leaderChange is one change of a partition's leader or ISR as Metadata reported it.
type leaderChange struct {
	AtS       float64 `json:"at_s"`
	View      int32   `json:"view"` // the broker whose Metadata answer this is
	Partition int32   `json:"partition"`
	Leader    int32   `json:"leader"`
	ISR       []int32 `json:"isr"`
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

// watchLeaders records the leader/ISR timeline as each broker's Metadata answer shows it, to tell
// what an unavailability coincided with and whether brokers disagree, until the returned stop is
// called; stop returns the changes in time order and the polls in which two brokers named different
// leaders for a partition.
func watchLeaders(cl *kgo.Client, c *cluster, topic string, start time.Time) (stop func() ([]leaderChange, int64)) {
	var changes []leaderChange
	var disagree int64
	done := make(chan struct{})
	quit := make(chan struct{})
	go func() {
		defer close(done)
		prev := map[[2]int32]string{}
		for {
			select {
			case <-quit:
				return
			case <-time.After(200 * time.Millisecond):
			}
			views := brokerViews(cl, c, topic)
			at := round1(time.Since(start).Seconds())
			leaders := map[int32]int32{}
			for view, st := range views {
				for p, ps := range st {
					isr := slices.Clone(ps.isr)
					slices.Sort(isr)
					if s := fmt.Sprint(ps.leader, isr); s != prev[[2]int32{view, p}] {
						prev[[2]int32{view, p}] = s
						changes = append(changes, leaderChange{AtS: at, View: view, Partition: p, Leader: ps.leader, ISR: isr})
					}
					if l, ok := leaders[p]; ok && ps.leader >= 0 && l >= 0 && l != ps.leader {
						disagree++
					}
					if ps.leader >= 0 {
						leaders[p] = ps.leader
					}
				}
			}
		}
	}()
	return func() ([]leaderChange, int64) {
		close(quit)
		<-done
		sort.SliceStable(changes, func(i, j int) bool { return changes[i].AtS < changes[j].AtS })
		return changes, disagree
	}
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

// finalLog is every partition as read back at the end.
type finalLog struct {
	keys []map[int64]key
	hash []map[int64]uint64
	bad  []string
}

func readAll(adm *kadm.Client, c *cluster, cfg config) (*finalLog, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var ends map[int32]int64
	for {
		lctx, lcancel := context.WithTimeout(ctx, 5*time.Second)
		lo, err := adm.ListEndOffsets(lctx, cfg.topic)
		lcancel()
		if err == nil && lo.Error() == nil {
			ends = map[int32]int64{}
			lo.Each(func(o kadm.ListedOffset) { ends[o.Partition] = o.Offset })
			if len(ends) == cfg.partitions {
				break
			}
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("list end offsets: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	offsets := map[int32]kgo.Offset{}
	for p := range cfg.partitions {
		offsets[int32(p)] = kgo.NewOffset().AtStart()
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.addrs()...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{cfg.topic: offsets}),
		kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	fl := &finalLog{}
	next := make([]int64, cfg.partitions)
	for range cfg.partitions {
		fl.keys = append(fl.keys, map[int64]key{})
		fl.hash = append(fl.hash, map[int64]uint64{})
	}
	done := func() bool {
		for p := range cfg.partitions {
			if next[p] < ends[int32(p)] {
				return false
			}
		}
		return true
	}
	for !done() {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil, fmt.Errorf("reading back: stuck at %v, end offsets %v", next, ends)
		}
		fs.EachError(func(t string, p int32, err error) { log.Printf("read back %s/%d: %v", t, p, err) })
		fs.EachRecord(func(rec *kgo.Record) {
			p := rec.Partition
			if rec.Offset >= ends[p] {
				return // produced after the end offsets were listed (cannot happen: producers stopped)
			}
			if k, ok := decodeValue(rec.Value); ok {
				fl.keys[p][rec.Offset] = k
			} else {
				fl.bad = append(fl.bad, fmt.Sprintf("partition %d offset %d: %q", p, rec.Offset, rec.Value[:min(len(rec.Value), 40)]))
			}
			fl.hash[p][rec.Offset] = hashValue(rec.Value)
			next[p] = rec.Offset + 1
		})
	}
	return fl, nil
}

// verify compares the acknowledged records with the final log.
func verify(sum *chaosSummary, acks map[key]int64, fl *finalLog, cfg config) {
	example := func(format string, args ...any) {
		if len(sum.Examples) < 20 {
			sum.Examples = append(sum.Examples, fmt.Sprintf(format, args...))
		}
	}
	sum.Invalid = int64(len(fl.bad))
	for _, b := range fl.bad {
		example("invalid value: %s", b)
	}
	where := map[key][]int64{}
	for p := range cfg.partitions {
		offs := make([]int64, 0, len(fl.keys[p]))
		for off := range fl.keys[p] {
			offs = append(offs, off)
		}
		sort.Slice(offs, func(i, j int) bool { return offs[i] < offs[j] })
		sum.PerPartition[p].LogRecords = int64(len(offs))
		sum.LogRecords += int64(len(offs))
		lastSeq := map[uint16]uint32{}
		for _, off := range offs {
			k := fl.keys[p][off]
			where[k] = append(where[k], off)
			if k.part != int32(p) {
				sum.Invalid++
				example("record %v in partition %d at offset %d", k, p, off)
			}
			if k.seq < lastSeq[k.prod] {
				sum.Reordered++
				example("reordered: partition %d offset %d: producer %d seq %d after seq %d", p, off, k.prod, k.seq, lastSeq[k.prod])
			}
			lastSeq[k.prod] = max(lastSeq[k.prod], k.seq)
		}
	}
	for k, offs := range where {
		if len(offs) > 1 {
			sum.Duplicated += int64(len(offs) - 1)
			example("duplicated: producer %d partition %d seq %d at offsets %v", k.prod, k.part, k.seq, offs)
		}
		if _, ok := acks[k]; !ok {
			sum.UnackedPresent++
		}
	}
	for k, off := range acks {
		got, ok := fl.keys[k.part][off]
		if ok && got == k {
			continue
		}
		sum.Lost++
		if offs := where[k]; len(offs) > 0 {
			sum.LostMoved++
			example("lost: producer %d partition %d seq %d acknowledged at offset %d, found at %v", k.prod, k.part, k.seq, off, offs)
		} else {
			sum.LostMissing++
			example("lost: producer %d partition %d seq %d acknowledged at offset %d, absent (offset holds %v: %v)", k.prod, k.part, k.seq, off, ok, got)
		}
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

// brokerViews asks every running broker for the topic's metadata directly (not through the
// client's choice of broker), each with a short timeout so a paused broker is just missing.
func brokerViews(cl *kgo.Client, c *cluster, topic string) map[int32]map[int32]partState {
	var mu sync.Mutex
	var wg sync.WaitGroup
	out := map[int32]map[int32]partState{}
	for _, b := range c.brokers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			req := kmsg.NewPtrMetadataRequest()
			rt := kmsg.NewMetadataRequestTopic()
			rt.Topic = kmsg.StringPtr(topic)
			req.Topics = append(req.Topics, rt)
			resp, err := req.RequestWith(ctx, cl.Broker(int(b.ID)))
			if err != nil {
				return
			}
			st := map[int32]partState{}
			for _, t := range resp.Topics {
				for _, p := range t.Partitions {
					st[p.Partition] = partState{leader: p.Leader, replicas: p.Replicas, isr: p.ISR}
				}
			}
			mu.Lock()
			out[b.ID] = st
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// ctx60 bounds a broker (re)start: long enough for a loaded machine, short enough to notice a
// broker that cannot start at all.
func ctx60() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	time.AfterFunc(61*time.Second, cancel)
	return ctx
}
