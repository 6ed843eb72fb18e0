package loadgen

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Options are how a run reports, as opposed to what it does (the Workload).
type Options struct {
	Progress io.Writer // the live line each second; nil = quiet
	Label    string    // the name compare uses; default: the workload name
	// ReadyTimeout bounds the wait for consumer groups to be assigned every partition.
	ReadyTimeout time.Duration

	// An agent's part of a distributed run (see agent.go); zero values: the whole workload, now.
	Share       *Share
	StartAt     time.Time    // when the producers' schedule starts (the same on every agent)
	GroupPrefix string       // consumer group names' prefix (the same on every agent)
	OnSample    func(Sample) // called with the counters after every tick
	// Done, closed, ends the run's drain: an agent's coordinator closes it once every agent's
	// consumers caught up (an agent alone cannot tell). Only with Share.
	Done <-chan struct{}
}

// Share is the part of a workload one agent runs: producers [ProducerLo, ProducerHi) of the
// workload's Producers, and consumers [ConsumerLo, ConsumerHi) of each group's Consumers.
type Share struct {
	ProducerLo int `json:"producer_lo"`
	ProducerHi int `json:"producer_hi"`
	ConsumerLo int `json:"consumer_lo"`
	ConsumerHi int `json:"consumer_hi"`
}

// Sample is the run's counters at one tick: cumulative records and bytes acknowledged and
// consumed (over all groups), records failed, and the consumer lag (acknowledged x groups - consumed).
type Sample struct {
	At            float64 `json:"t"` // seconds since the producers started
	Produced      int64   `json:"produced"`
	ProducedBytes int64   `json:"produced_bytes"`
	Consumed      int64   `json:"consumed"`
	ConsumedBytes int64   `json:"consumed_bytes"`
	Failed        int64   `json:"failed"`
	Lag           int64   `json:"lag"`
	ProducersDone bool    `json:"producers_done,omitempty"` // every local producer finished and flushed
}

// Run runs the workload once against its brokers and returns what it measured.
func Run(ctx context.Context, w Workload, opt Options) (*Result, error) {
	if err := w.Validate(); err != nil {
		return nil, err
	}
	if opt.ReadyTimeout == 0 {
		opt.ReadyTimeout = 30 * time.Second
	}
	r := &runner{w: w, opt: opt, pubSet: NewLatencySet(), e2eSet: NewLatencySet(), lagSet: NewLatencySet(), probeSet: NewLatencySet()}
	r.res = &Result{Loadgen: Version, Label: opt.Label, Machine: ThisMachine(), Broker: Broker{Bootstrap: w.Brokers}}
	if r.res.Label == "" {
		r.res.Label = w.Name
	}
	created := false
	if r.w.Topic == "" {
		r.w.Topic = "loadgen-" + runID()
		created = true
	}
	r.res.Workload = r.w
	r.topics = r.w.TopicNames()

	admCl, err := kgo.NewClient(append(securityOpts(&w), kgo.SeedBrokers(w.Brokers...))...)
	if err != nil {
		return nil, err
	}
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	if err := describeBroker(ctx, adm, &r.res.Broker); err != nil {
		return nil, fmt.Errorf("broker %s: %w", strings.Join(w.Brokers, ","), err)
	}
	if err := createTopics(ctx, adm, r.topics, w.Partitions, w.ReplicationFactor); err != nil {
		return nil, err
	}
	if created && !w.KeepTopics {
		defer func() {
			dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, _ = adm.DeleteTopics(dctx, r.topics...)
		}()
	}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer r.closeClients()
	r.cpu0 = cpuSeconds()
	// Consumers first, so they are in their groups before the first record is sent.
	if err := r.startConsumers(runCtx); err != nil {
		return nil, err
	}
	if err := r.newProducers(); err != nil {
		return nil, err
	}
	if err := r.measure(runCtx); err != nil {
		return nil, err
	}
	cancel()
	r.finish()
	return r.res, nil
}

// runner holds one run's clients and measurements.
type runner struct {
	w      Workload
	opt    Options
	res    *Result
	topics []string

	groups    []*groupCheck
	consumers []*consumer
	consWG    sync.WaitGroup
	producers []*producer
	runs      []func(ctx context.Context, startNs, stopNs int64)
	clients   []producerClient // the producers'
	consCtx   context.CancelFunc

	pubSet, e2eSet, lagSet *LatencySet
	pubLog, e2eLog         *hlog
	// The probe: a goroutine sleeping 1 ms at a time records how late it wakes (see probe.go).
	probeSet *LatencySet
	probeLog *hlog

	runStart, start, measureFrom, stop, hardEnd, last time.Time
	m0, m1                                            [4]int64 // counters at measureFrom and stop (see snap)
	t0, t1                                            time.Time
	cpu0                                              float64
	flushed                                           bool // the producers finished and flushed (measure's goroutine)
}

func (r *runner) startConsumers(ctx context.Context) error {
	w := &r.w
	if w.Consumers == 0 {
		return nil
	}
	r.runStart = time.Now()
	groupPrefix := "loadgen-" + runID()
	nGroups, direct := w.ConsumerGroups, w.ConsumerGroups == 0
	if direct {
		nGroups = 1
	}
	if r.opt.GroupPrefix != "" {
		groupPrefix = r.opt.GroupPrefix
	}
	lo, hi := 0, w.Consumers
	if sh := r.opt.Share; sh != nil {
		lo, hi = sh.ConsumerLo, sh.ConsumerHi
	}
	for gi := range nGroups {
		g := newGroupCheck(r.topics, int(w.Partitions), w.Producers)
		r.groups = append(r.groups, g)
		for ci := lo; ci < hi; ci++ {
			if w.Client == "native" {
				// Native consumers split the partitions themselves, group or not.
				assign := map[string][]int32{}
				for t, ps := range directAssignment(r.topics, w.Partitions, w.Consumers, ci) {
					for p := range ps {
						assign[t] = append(assign[t], p)
					}
					g.assigned.Add(int64(len(ps)))
				}
				c := &consumer{group: g, e2e: NewRecorder(), runStart: r.runStart.UnixNano()}
				c.native = newNativeConsumer(c, w, assign)
				c.setMeasureFrom(math.MaxInt64)
				r.consumers = append(r.consumers, c)
				r.e2eSet.Add(c.e2e)
				continue
			}
			opts := consumerOpts(w)
			if direct {
				assign := directAssignment(r.topics, w.Partitions, w.Consumers, ci)
				for _, ps := range assign {
					g.assigned.Add(int64(len(ps)))
				}
				opts = append(opts, kgo.ConsumePartitions(assign))
			} else {
				opts = append(opts, groupOpts(r.topics, fmt.Sprintf("%s-g%d", groupPrefix, gi), g)...)
			}
			cl, err := kgo.NewClient(opts...)
			if err != nil {
				return err
			}
			c := &consumer{client: cl, group: g, e2e: NewRecorder(), runStart: r.runStart.UnixNano()}
			c.setMeasureFrom(math.MaxInt64) // nothing is measured before the producers start
			r.consumers = append(r.consumers, c)
			r.e2eSet.Add(c.e2e)
		}
	}
	// Consumers join their groups only once they poll.
	consCtx, cancel := context.WithCancel(ctx)
	r.consCtx = cancel
	for _, c := range r.consumers {
		r.consWG.Go(func() { c.run(consCtx) })
	}
	if r.opt.Share != nil {
		return nil // an agent's consumers hold only part of each group's partitions; the start time leaves room to join
	}
	if err := waitReady(ctx, r.groups, int64(len(r.topics))*int64(w.Partitions), r.opt.ReadyTimeout); err != nil {
		if ctx.Err() != nil {
			return err
		}
		r.res.Warnings = append(r.res.Warnings, err.Error())
	}
	return nil
}

func (r *runner) newProducers() error {
	w := &r.w
	keys := makeKeys(w.Keys)
	rate := w.Rate / float64(w.Producers)
	seed := uint64(time.Now().UnixNano())
	lo, hi := 0, w.Producers
	if sh := r.opt.Share; sh != nil {
		lo, hi = sh.ProducerLo, sh.ProducerHi
	}
	for i := lo; i < hi; i++ {
		topic := r.topics[i%len(r.topics)]
		if w.Client == "native" {
			p := newProducerPool(uint32(i), w, topic, rate, keys, nil, seed, false)
			np, err := newNativeProducer(p, w, topic)
			if err != nil {
				return fmt.Errorf("native producer: %w", err)
			}
			r.clients = append(r.clients, np)
			r.producers = append(r.producers, p)
			r.runs = append(r.runs, np.run)
			r.pubSet.Add(p.pub)
			r.lagSet.Add(p.lagRec)
			continue
		}
		cl, err := kgo.NewClient(producerOpts(w, topic)...)
		if err != nil {
			return err
		}
		r.clients = append(r.clients, kgoProducer{cl})
		send := func(rec *kgo.Record, promise func(*kgo.Record, error)) {
			cl.Produce(context.Background(), rec, promise)
		}
		p := newProducer(uint32(i), w, topic, rate, keys, send, seed)
		r.producers = append(r.producers, p)
		r.runs = append(r.runs, p.run)
		r.pubSet.Add(p.pub)
		r.lagSet.Add(p.lagRec)
	}
	return nil
}

// snap reads the counters: records and bytes acknowledged, records and bytes consumed.
func (r *runner) snap() (c [4]int64) {
	for _, p := range r.producers {
		c[0] += p.acked.Load()
		c[1] += p.ackedBytes.Load()
	}
	for _, g := range r.groups {
		c[2] += g.consumed.Load()
		c[3] += g.consumedBytes.Load()
	}
	return c
}

// measure runs the producers from warm-up to stop, then lets acknowledgements and consumers
// finish until hardEnd, ticking the histograms and the progress line once a second.
func (r *runner) measure(ctx context.Context) error {
	r.start = time.Now()
	if !r.opt.StartAt.IsZero() {
		if !sleep(ctx, time.Until(r.opt.StartAt)) {
			return ctx.Err()
		}
		r.start = r.opt.StartAt
	}
	r.measureFrom = r.start.Add(r.w.Warmup.D())
	r.stop = r.measureFrom.Add(r.w.Duration.D())
	r.hardEnd = r.stop.Add(r.w.DrainTimeout.D())
	for _, p := range r.producers {
		p.measureFrom = r.measureFrom.UnixNano()
	}
	for _, c := range r.consumers {
		c.setMeasureFrom(r.measureFrom.UnixNano())
	}
	r.pubLog, r.e2eLog = newHlog(r.start, "publish"), newHlog(r.start, "e2e")
	r.probeLog = newHlog(r.start, "probe")
	probeRec := NewRecorder()
	r.probeSet.Add(probeRec)
	probeCtx, probeCancel := context.WithCancel(ctx)
	defer probeCancel()
	go probe(probeCtx, probeRec, r.measureFrom)

	// Producers stop at stop even when blocked on the in-flight bound.
	sendCtx, sendCancel := context.WithDeadline(ctx, r.stop)
	defer sendCancel()
	flushCtx, flushCancel := context.WithDeadline(ctx, r.hardEnd)
	defer flushCancel()
	var prodWG sync.WaitGroup
	for _, run := range r.runs {
		prodWG.Go(func() { run(sendCtx, r.start.UnixNano(), r.stop.UnixNano()) })
	}
	prodDone := make(chan struct{})
	go func() {
		prodWG.Wait()
		for _, cl := range r.clients {
			cl.flush(flushCtx)
		}
		close(prodDone)
	}()

	// Rates are counted over [measureFrom, stop], snapped on a goroutine of their own: a tick merging
	// a thousand producers' histograms can take seconds, and a snap queued behind it came late (with
	// the timer's time), leaving an empty window.
	r.t0, r.t1 = r.start, time.Time{}
	windowDone := make(chan struct{})
	defer func() { <-windowDone }()
	go func() {
		defer close(windowDone)
		if !sleep(ctx, time.Until(r.measureFrom)) {
			return
		}
		r.m0 = r.snap()
		r.t0 = time.Now()
		if !sleep(ctx, time.Until(r.stop)) {
			return
		}
		r.m1 = r.snap()
		r.t1 = time.Now()
	}()
	endTimer := time.NewTimer(time.Until(r.hardEnd))
	defer endTimer.Stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	r.last = r.start
	var lastCounts [4]int64
	for {
		var now time.Time
		final := false
		select {
		case <-r.opt.Done:
			if r.opt.Share == nil {
				break
			}
			now, final = time.Now(), true
		case now = <-tick.C:
		case <-prodDone:
			prodDone = nil
			r.flushed = true
			now = time.Now()
		case now = <-endTimer.C:
			final = true
		case <-ctx.Done():
			return ctx.Err()
		}
		c, prev := r.snap(), r.last
		r.tick(now)
		r.sample(now, c)
		if r.opt.Progress != nil {
			lag := c[0]*int64(len(r.groups)) - c[2]
			progressLine(r.opt.Progress, now.Sub(r.start), now.Sub(prev), c, lastCounts, r.pubSet.Total, r.e2eSet.Total, lag)
		}
		lastCounts = c
		if final || prodDone == nil && r.opt.Share == nil && r.caughtUp(c[0]) {
			return nil
		}
	}
}

// sample records the counters in the timeline and hands them to OnSample.
func (r *runner) sample(now time.Time, c [4]int64) {
	var failed int64
	for _, p := range r.producers {
		failed += p.failed.Load()
	}
	s := Sample{At: now.Sub(r.start).Seconds(), Produced: c[0], ProducedBytes: c[1], Consumed: c[2], ConsumedBytes: c[3], Failed: failed, ProducersDone: r.flushed}
	if len(r.groups) > 0 {
		s.Lag = c[0]*int64(len(r.groups)) - c[2]
	}
	r.res.Timeline = append(r.res.Timeline, s)
	if r.opt.OnSample != nil {
		r.opt.OnSample(s)
	}
}

// tick moves the recorders' values into the totals and writes one interval to the logs.
func (r *runner) tick(now time.Time) {
	r.pubSet.Tick(r.last, now)
	r.e2eSet.Tick(r.last, now)
	r.lagSet.Tick(r.last, now)
	r.probeSet.Tick(r.last, now)
	r.pubLog.add(r.pubSet.Interval)
	r.e2eLog.add(r.e2eSet.Interval)
	r.probeLog.add(r.probeSet.Interval)
	r.last = now
}

// caughtUp reports whether every group has consumed all acked records.
func (r *runner) caughtUp(acked int64) bool {
	for _, g := range r.groups {
		if g.consumed.Load() < acked {
			return false
		}
	}
	return true
}

// closeClients closes every client (again, harmlessly, after finish).
func (r *runner) closeClients() {
	if r.consCtx != nil {
		r.consCtx()
	}
	for _, c := range r.consumers {
		c.close()
	}
	for _, cl := range r.clients {
		cl.close()
	}
}

// finish stops the clients, takes the last interval and computes the figures.
func (r *runner) finish() {
	if r.consCtx != nil {
		r.consCtx()
	}
	for _, c := range r.consumers {
		c.close()
	}
	r.consWG.Wait()
	// Closing a producer fails the records still unacknowledged (counted as errors); their
	// promises run on kgo's goroutine, so wait until every pool is whole again.
	for _, cl := range r.clients {
		cl.close()
	}
	for _, p := range r.producers {
		for deadline := time.Now().Add(5 * time.Second); !p.idle() && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
	}
	end := time.Now()
	var unsent int64
	for _, p := range r.producers {
		unsent += p.chargeUnsent(end.UnixNano())
	}
	// Values recorded after the last tick (the consumers' final polls, unsent records).
	r.tick(end)
	final := r.snap()
	r.sample(end, final)
	if r.t1.IsZero() { // the run ended before stop
		r.m1, r.t1 = final, end
	}
	r.figures(final, unsent)
}

func (r *runner) figures(final [4]int64, unsent int64) {
	res, w := r.res, &r.w
	secs := r.t1.Sub(r.t0).Seconds()
	res.Start = r.start.UTC()
	res.MeasuredSeconds = secs
	res.Produce = throughput(final[0], final[1], r.m1[0]-r.m0[0], r.m1[1]-r.m0[1], secs)
	ng := int64(max(len(r.groups), 1)) // consume rates are per group
	res.Consume = throughput(final[2], final[3], (r.m1[2]-r.m0[2])/ng, (r.m1[3]-r.m0[3])/ng, secs)
	res.Publish = summarize(r.pubSet.Total, r.pubSet.Over)
	res.EndToEnd = summarize(r.e2eSet.Total, r.e2eSet.Over)
	res.PublishHist, res.E2EHist = r.pubSet.Total, r.e2eSet.Total
	res.PublishLog = r.pubLog.bytes()
	res.ProbeLog = r.probeLog.bytes()
	if len(r.consumers) > 0 {
		res.E2ELog = r.e2eLog.bytes()
	}

	res.ProduceErrors, res.ConsumeErrors = map[string]int64{}, map[string]int64{}
	var maxLag, blocked int64
	for _, p := range r.producers {
		if lost := p.sent.Load() - p.acked.Load() - p.failed.Load(); lost > 0 {
			res.ProduceErrors["client: no acknowledgement nor error by the end"] += lost
		}
		p.errs.addTo(res.ProduceErrors)
		maxLag = max(maxLag, p.maxLag.Load())
		blocked += p.blocked.Load()
	}
	for _, c := range r.consumers {
		c.errs.addTo(res.ConsumeErrors)
	}
	res.Check.Complete = true
	for _, g := range r.groups {
		res.ConsumerLag += final[0] - g.consumed.Load()
		res.Check.OutOfOrder += g.outOfOrder.Load()
		res.Check.OffsetGaps += g.offsetGaps.Load()
		res.Check.Stale += g.stale.Load()
		res.Check.Foreign += g.foreign.Load()
		if g.consumed.Load() != final[0] {
			res.Check.Complete = false
		}
	}

	target := w.Rate
	if sh := r.opt.Share; sh != nil && w.Producers > 0 {
		target = w.Rate * float64(sh.ProducerHi-sh.ProducerLo) / float64(w.Producers) // this agent's part
	}
	res.Schedule = Schedule{
		TargetRate:      target,
		MaxLagMs:        float64(maxLag) / 1e6,
		BlockedSeconds:  float64(blocked) / 1e9,
		Unsent:          unsent,
		InFlightBound:   w.MaxBufferedRecords,
		ProducerThreads: len(r.producers),
		ConsumerThreads: len(r.consumers),
		GOMAXPROCS:      runtime.GOMAXPROCS(0),
		CPUSeconds:      cpuSeconds() - r.cpu0,
	}
	if len(r.producers) > 0 {
		res.Schedule.InFlightBound = r.producers[0].poolSize
	}
	if r.lagSet.Total.TotalCount() > 0 {
		res.Schedule.LagP99Ms = float64(r.lagSet.Total.ValueAtQuantile(99)) / 1e6
	}
	res.Warnings = append(res.Warnings, judgeSchedule(&res.Schedule, res.Produce.RecordsPerSec, secs)...)
	var nerr int64
	for _, v := range res.ProduceErrors {
		nerr += v
	}
	if nerr > 0 {
		res.Warnings = append(res.Warnings, fmt.Sprintf("%d records failed to produce (see produce_errors)", nerr))
	}
	if unsent > 0 {
		res.Warnings = append(res.Warnings, fmt.Sprintf("%d scheduled records were never sent: the run ended while the in-flight bound held the producers back; their wait until the end is in the publish latency", unsent))
	}
	if len(r.groups) > 0 && !res.Check.Complete {
		res.Warnings = append(res.Warnings, fmt.Sprintf("consumers did not read every acknowledged record within the drain timeout (lag %d)", res.ConsumerLag))
	}
}

// judgeSchedule says whether the producers kept to their schedule, and if not, who was the limit.
func judgeSchedule(s *Schedule, achieved, secs float64) []string {
	if s.TargetRate <= 0 {
		return nil
	}
	var warn []string
	s.TargetAchieved = achieved >= 0.95*s.TargetRate
	if !s.TargetAchieved {
		warn = append(warn, fmt.Sprintf("target rate %.0f rec/s not reached: %.0f rec/s acknowledged", s.TargetRate, achieved))
	}
	// Behind schedule without waiting on the in-flight bound means loadgen's own loop was slow.
	if s.LagP99Ms > 10 || s.MaxLagMs > 100 {
		if s.BlockedSeconds < 0.1*secs*float64(s.ProducerThreads) {
			s.LoadgenLimited = true
			warn = append(warn, fmt.Sprintf("loadgen's send loop fell behind its schedule (max lag %.1f ms, p99 %.1f ms) without waiting on the in-flight bound: loadgen was short of CPU (the broker may share the machine), so the offered load dipped below the target at times; latencies still count from intended times", s.MaxLagMs, s.LagP99Ms))
		} else {
			warn = append(warn, fmt.Sprintf("producers fell behind schedule (max lag %.1f ms) waiting %.1f s on the in-flight bound (%d records): the broker was the limit; latencies count from intended times", s.MaxLagMs, s.BlockedSeconds, s.InFlightBound))
		}
	}
	return warn
}

func throughput(records, bytes, windowRecords, windowBytes int64, secs float64) Throughput {
	t := Throughput{Records: records, Bytes: bytes}
	if secs > 0 {
		t.RecordsPerSec = float64(windowRecords) / secs
		t.MBPerSec = float64(windowBytes) / secs / 1e6
	}
	return t
}

// waitReady waits until every group holds every partition.
func waitReady(ctx context.Context, groups []*groupCheck, partitions int64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ready := true
		for _, g := range groups {
			if g.assigned.Load() < partitions {
				ready = false
			}
		}
		if ready {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("consumer groups not fully assigned after %s; starting anyway", timeout)
		}
		if !sleep(ctx, 20*time.Millisecond) {
			return ctx.Err()
		}
	}
}

// producerClient is a producer's client: kgo's or the native one.
type producerClient interface {
	flush(ctx context.Context) // until everything sent is acknowledged or failed, or ctx ends
	close()                    // fails what is still unacknowledged
}

type kgoProducer struct{ cl *kgo.Client }

func (k kgoProducer) flush(ctx context.Context) { _ = k.cl.Flush(ctx) }
func (k kgoProducer) close()                    { k.cl.Close() }

func runID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return time.Now().UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
}
