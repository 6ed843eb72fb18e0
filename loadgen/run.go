package loadgen

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Options are how a run reports, as opposed to what it does (the Workload).
type Options struct {
	Progress io.Writer // the live line each second; nil = quiet
	Label    string    // the name compare uses; default: the workload name
	// ReadyTimeout bounds the wait for consumer groups to be assigned every partition.
	ReadyTimeout time.Duration
}

// Run runs the workload once against its brokers and returns what it measured.
func Run(ctx context.Context, w Workload, opt Options) (*Result, error) {
	if err := w.Validate(); err != nil {
		return nil, err
	}
	if opt.ReadyTimeout == 0 {
		opt.ReadyTimeout = 30 * time.Second
	}
	res := &Result{Loadgen: Version, Label: opt.Label, Machine: ThisMachine(), Broker: Broker{Bootstrap: w.Brokers}}
	if res.Label == "" {
		res.Label = w.Name
	}
	created := false
	if w.Topic == "" {
		w.Topic = "loadgen-" + runID()
		created = true
	}
	res.Workload = w
	topics := w.TopicNames()

	admCl, err := kgo.NewClient(kgo.SeedBrokers(w.Brokers...))
	if err != nil {
		return nil, err
	}
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	if err := describeBroker(ctx, adm, &res.Broker); err != nil {
		return nil, fmt.Errorf("broker %s: %w", strings.Join(w.Brokers, ","), err)
	}
	if err := createTopics(ctx, adm, topics, w.Partitions, w.ReplicationFactor); err != nil {
		return nil, err
	}
	if created && !w.KeepTopics {
		defer func() {
			dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, _ = adm.DeleteTopics(dctx, topics...)
		}()
	}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	runStart := time.Now()
	cpu0 := cpuSeconds()

	// Consumers first, so they are in their groups before the first record is sent.
	pubSet, e2eSet, lagSet := NewLatencySet(), NewLatencySet(), NewLatencySet()
	var groups []*groupCheck
	var consumers []*consumer
	var consWG sync.WaitGroup
	defer func() {
		for _, c := range consumers {
			c.client.Close()
		}
	}()
	groupPrefix := "loadgen-" + runID()
	nGroups, direct := w.ConsumerGroups, w.ConsumerGroups == 0
	if direct {
		nGroups = 1
	}
	for gi := range nGroups {
		if w.Consumers == 0 {
			break
		}
		g := newGroupCheck(topics, int(w.Partitions), w.Producers)
		groups = append(groups, g)
		for ci := range w.Consumers {
			c := &consumer{group: g, e2e: NewRecorder(), runStart: runStart.UnixNano()}
			opts := []kgo.Opt{
				kgo.SeedBrokers(w.Brokers...),
				kgo.FetchMaxWait(500 * time.Millisecond),
				kgo.FetchMaxPartitionBytes(w.FetchMaxPartitionBytes),
				kgo.FetchMaxBytes(max(50<<20, w.FetchMaxPartitionBytes)),
			}
			if direct {
				// Consumer ci reads every partition whose index is ci modulo the consumers.
				assign := map[string]map[int32]kgo.Offset{}
				for ti, t := range topics {
					for p := range w.Partitions {
						if (ti*int(w.Partitions)+int(p))%w.Consumers == ci {
							if assign[t] == nil {
								assign[t] = map[int32]kgo.Offset{}
							}
							assign[t][p] = kgo.NewOffset().AtStart()
							g.assigned.Add(1)
						}
					}
				}
				opts = append(opts, kgo.ConsumePartitions(assign))
			} else {
				opts = append(opts,
					kgo.ConsumeTopics(topics...),
					kgo.ConsumerGroup(fmt.Sprintf("%s-g%d", groupPrefix, gi)),
					kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
					kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { g.assigned.Add(countParts(m)) }),
					kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { g.assigned.Add(-countParts(m)) }),
					kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { g.assigned.Add(-countParts(m)) }),
				)
			}
			c.client, err = kgo.NewClient(opts...)
			if err != nil {
				return nil, err
			}
			consumers = append(consumers, c)
			e2eSet.Add(c.e2e)
		}
	}
	total := int64(len(topics)) * int64(w.Partitions)
	var readyErr error
	if len(consumers) > 0 {
		// Consumers only join their group once they poll.
		readyErr = waitReady(runCtx, groups, total, opt.ReadyTimeout, func() {
			for _, c := range consumers {
				consWG.Go(func() { c.run(runCtx) })
			}
		})
		if readyErr != nil {
			res.Warnings = append(res.Warnings, readyErr.Error())
		}
	}

	// Producers.
	keys := makeKeys(w.Keys)
	var producers []*producer
	var clients []*kgo.Client
	defer func() {
		for _, cl := range clients {
			cl.Close()
		}
	}()
	rate := w.Rate / float64(w.Producers)
	seed := uint64(time.Now().UnixNano())
	for i := range w.Producers {
		topic := topics[i%len(topics)]
		var p *producer
		cl, err := kgo.NewClient(producerOpts(&w, topic)...)
		if err != nil {
			return nil, err
		}
		clients = append(clients, cl)
		send := func(r *kgo.Record, promise func(*kgo.Record, error)) { cl.Produce(context.Background(), r, promise) }
		p = newProducer(uint32(i), &w, topic, rate, keys, send, seed)
		// kgo must never block Produce: our pool is the in-flight bound.
		producers = append(producers, p)
		pubSet.Add(p.pub)
		lagSet.Add(p.lagRec)
	}
	start := time.Now()
	measureFrom := start.Add(w.Warmup.D())
	stop := measureFrom.Add(w.Duration.D())
	for _, p := range producers {
		p.measureFrom = measureFrom.UnixNano()
	}
	for _, c := range consumers {
		c.measureFrom = measureFrom.UnixNano()
	}

	pubLog, e2eLog := newHlog(start, "publish"), newHlog(start, "e2e")
	snap := func() (prod, prodBytes, cons, consBytes int64) {
		for _, p := range producers {
			prod += p.acked.Load()
			prodBytes += p.ackedBytes.Load()
		}
		for _, g := range groups {
			cons += g.consumed.Load()
			consBytes += g.consumedBytes.Load()
		}
		return
	}

	// Producers stop at stop even when blocked on the in-flight bound; everything after
	// (acknowledgements, consumers catching up) must finish by hardEnd.
	hardEnd := stop.Add(w.DrainTimeout.D())
	sendCtx, sendCancel := context.WithDeadline(runCtx, stop)
	defer sendCancel()
	flushCtx, flushCancel := context.WithDeadline(runCtx, hardEnd)
	defer flushCancel()
	var prodWG sync.WaitGroup
	for _, p := range producers {
		prodWG.Go(func() { p.run(sendCtx, start.UnixNano(), stop.UnixNano()) })
	}
	prodDone := make(chan struct{})
	go func() {
		prodWG.Wait()
		for _, cl := range clients {
			_ = cl.Flush(flushCtx)
		}
		close(prodDone)
	}()
	hardEndTimer := time.NewTimer(time.Until(hardEnd))
	defer hardEndTimer.Stop()

	// The reporter: one tick a second until producers are done and consumers caught up.
	var m0, m1 [4]int64 // counters at warm-up end and at the end of the window
	var t0, t1 time.Time
	haveM0, haveM1 := false, false
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	last, lastCounts := start, [4]int64{}
	// Rates are counted over exactly [measureFrom, stop].
	m0Timer, m1Timer := time.NewTimer(time.Until(measureFrom)), time.NewTimer(time.Until(stop))
	defer m0Timer.Stop()
	defer m1Timer.Stop()
	done := false
	for !done {
		var now time.Time
		select {
		case t := <-m0Timer.C:
			m0, t0, haveM0 = snapCounts(snap), t, true
			continue
		case t := <-m1Timer.C:
			m1, t1, haveM1 = snapCounts(snap), t, true
			continue
		case now = <-tick.C:
		case <-prodDone:
			prodDone = nil
			now = time.Now()
		case <-hardEndTimer.C:
			now, done = time.Now(), true
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		c := snapCounts(snap)
		pubSet.Tick(last, now)
		e2eSet.Tick(last, now)
		lagSet.Tick(last, now)
		pubLog.add(pubSet.Interval)
		e2eLog.add(e2eSet.Interval)
		if opt.Progress != nil {
			progressLine(opt.Progress, now.Sub(start), now.Sub(last), c, lastCounts, pubSet.Total, e2eSet.Total, c[0]*int64(len(groups))-c[2])
		}
		last, lastCounts = now, c
		if prodDone == nil && !done {
			caughtUp := true
			for _, g := range groups {
				if g.consumed.Load() < c[0] {
					caughtUp = false
				}
			}
			done = caughtUp
		}
	}
	cancel()
	for _, c := range consumers {
		c.client.Close()
	}
	consWG.Wait()
	// Closing a producer fails the records still unacknowledged (counted as errors); their
	// promises run on kgo's goroutine, so wait until every pool is whole again.
	for _, cl := range clients {
		cl.Close()
	}
	for _, p := range producers {
		for deadline := time.Now().Add(5 * time.Second); len(p.free) < p.poolSize && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
	}
	// Values recorded after the last tick (the consumers' final polls) go into one more interval.
	end := time.Now()
	var unsent int64
	for _, p := range producers {
		unsent += p.chargeUnsent(end.UnixNano())
	}
	pubSet.Tick(last, end)
	e2eSet.Tick(last, end)
	lagSet.Tick(last, end)
	if pubSet.Interval.TotalCount()+e2eSet.Interval.TotalCount() > 0 {
		pubLog.add(pubSet.Interval)
		e2eLog.add(e2eSet.Interval)
	}
	final := snapCounts(snap)
	if !haveM0 {
		m0, t0 = [4]int64{}, start
	}
	if !haveM1 {
		m1, t1 = final, time.Now()
	}

	// Figures.
	secs := t1.Sub(t0).Seconds()
	res.Start = start.UTC()
	res.MeasuredSeconds = secs
	res.Produce = throughput(final[0], final[1], m1[0]-m0[0], m1[1]-m0[1], secs)
	ng := int64(max(len(groups), 1))
	res.Consume = throughput(final[2], final[3], (m1[2]-m0[2])/ng, (m1[3]-m0[3])/ng, secs)
	res.Publish = summarize(pubSet.Total, pubSet.Over)
	res.EndToEnd = summarize(e2eSet.Total, e2eSet.Over)
	res.PublishHist, res.E2EHist = pubSet.Total, e2eSet.Total
	res.PublishLog, res.E2ELog = pubLog.bytes(), e2eLog.bytes()
	if len(consumers) == 0 {
		res.E2ELog = nil
	}
	res.ProduceErrors, res.ConsumeErrors = map[string]int64{}, map[string]int64{}
	var maxLag, blocked int64
	for _, p := range producers {
		if lost := p.sent.Load() - p.acked.Load() - p.failed.Load(); lost > 0 {
			res.ProduceErrors["client: no acknowledgement nor error by the end"] += lost
		}
		p.errs.addTo(res.ProduceErrors)
		maxLag = max(maxLag, p.maxLag.Load())
		blocked += p.blocked.Load()
	}
	for _, c := range consumers {
		c.errs.addTo(res.ConsumeErrors)
	}
	res.Check.Complete = true
	for _, g := range groups {
		res.ConsumerLag += final[0] - g.consumed.Load()
		res.Check.OutOfOrder += g.outOfOrder.Load()
		res.Check.OffsetGaps += g.offsetGaps.Load()
		res.Check.Stale += g.stale.Load()
		res.Check.Foreign += g.foreign.Load()
		if g.consumed.Load() != final[0] {
			res.Check.Complete = false
		}
	}
	res.Schedule = Schedule{
		TargetRate:      w.Rate,
		MaxLagMs:        float64(maxLag) / 1e6,
		LagP99Ms:        float64(lagSet.Total.ValueAtQuantile(99)) / 1e6,
		BlockedSeconds:  float64(blocked) / 1e9,
		Unsent:          unsent,
		InFlightBound:   producers[0].poolSize,
		ProducerThreads: len(producers),
		ConsumerThreads: len(consumers),
		GOMAXPROCS:      runtime.GOMAXPROCS(0),
		CPUSeconds:      cpuSeconds() - cpu0,
	}
	if lagSet.Total.TotalCount() == 0 {
		res.Schedule.LagP99Ms = 0
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
	if len(groups) > 0 && !res.Check.Complete {
		res.Warnings = append(res.Warnings, fmt.Sprintf("consumers did not read every acknowledged record within the drain timeout (lag %d)", res.ConsumerLag))
	}
	return res, nil
}

// snapCounts returns snap's four counters as an array.
func snapCounts(snap func() (int64, int64, int64, int64)) (c [4]int64) {
	c[0], c[1], c[2], c[3] = snap()
	return c
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

func producerOpts(w *Workload, topic string) []kgo.Opt {
	opts := []kgo.Opt{
		kgo.SeedBrokers(w.Brokers...),
		kgo.DefaultProduceTopic(topic),
		kgo.ProducerLinger(w.Linger.D()),
		kgo.ProducerBatchMaxBytes(w.BatchMaxBytes),
		kgo.MaxBufferedRecords(w.MaxBufferedRecords + 1),
		kgo.ProducerBatchCompression(codec(w.Compression)),
	}
	switch w.Acks {
	case "0":
		opts = append(opts, kgo.RequiredAcks(kgo.NoAck()))
	case "1":
		opts = append(opts, kgo.RequiredAcks(kgo.LeaderAck()))
	default:
		opts = append(opts, kgo.RequiredAcks(kgo.AllISRAcks()))
	}
	if !w.Idempotent {
		// With idempotence kgo fixes in-flight requests at 5 (Kafka's limit for ordering).
		opts = append(opts, kgo.DisableIdempotentWrite(), kgo.MaxProduceRequestsInflightPerBroker(w.MaxInFlight))
	}
	if w.BatchMaxBytes > 1<<20 {
		opts = append(opts, kgo.BrokerMaxWriteBytes(2*w.BatchMaxBytes+(1<<20)))
	}
	return opts
}

func codec(name string) kgo.CompressionCodec {
	switch name {
	case "gzip":
		return kgo.GzipCompression()
	case "snappy":
		return kgo.SnappyCompression()
	case "lz4":
		return kgo.Lz4Compression()
	case "zstd":
		return kgo.ZstdCompression()
	}
	return kgo.NoCompression()
}

// describeBroker asks for the API versions of the first broker that answers.
func describeBroker(ctx context.Context, adm *kadm.Client, b *Broker) error {
	vctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	vs, err := adm.ApiVersions(vctx)
	if err != nil {
		return err
	}
	var lastErr error
	for _, v := range vs.Sorted() {
		if v.Err != nil {
			lastErr = v.Err
			continue
		}
		b.VersionHint = v.VersionGuess()
		for _, k := range v.Raw().ApiKeys {
			name := kmsg.NameForKey(k.ApiKey)
			if name == "" {
				name = fmt.Sprintf("Key%d", k.ApiKey)
			}
			b.APIVersions = append(b.APIVersions, fmt.Sprintf("%s %d-%d", name, k.MinVersion, k.MaxVersion))
		}
		return nil
	}
	if lastErr == nil {
		lastErr = errors.New("no broker answered ApiVersions")
	}
	return lastErr
}

// createTopics creates the topics that do not exist yet.
func createTopics(ctx context.Context, adm *kadm.Client, topics []string, partitions int32, rf int16) error {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := adm.CreateTopics(cctx, partitions, rf, nil, topics...)
	if err != nil {
		return fmt.Errorf("create topics: %w", err)
	}
	for _, t := range resp.Sorted() {
		if t.Err != nil && !errors.Is(t.Err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("create topic %s: %w", t.Topic, t.Err)
		}
	}
	return nil
}

// waitReady starts the consumers and waits until every group holds every partition.
func waitReady(ctx context.Context, groups []*groupCheck, partitions int64, timeout time.Duration, start func()) error {
	start()
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

func countParts(m map[string][]int32) int64 {
	var n int64
	for _, ps := range m {
		n += int64(len(ps))
	}
	return n
}

func runID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return time.Now().UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
}

// hlog writes one HdrHistogram log (the standard interval format) into memory.
type hlog struct {
	buf bytes.Buffer
	w   *hdrhistogram.HistogramLogWriter
}

func newHlog(start time.Time, tag string) *hlog {
	l := &hlog{}
	l.w = hdrhistogram.NewHistogramLogWriter(&l.buf)
	_ = l.w.OutputComment("[loadgen " + Version + " " + tag + " latency, values in nanoseconds]")
	_ = l.w.OutputLogFormatVersion()
	_ = l.w.OutputStartTime(start.UnixMilli())
	_ = l.w.OutputBaseTime(start.UnixMilli())
	l.w.SetBaseTime(start.UnixMilli())
	_ = l.w.OutputLegend()
	return l
}

func (l *hlog) add(h *hdrhistogram.Histogram) { _ = l.w.OutputIntervalHistogram(h) }

func (l *hlog) bytes() []byte { return l.buf.Bytes() }

// progressLine prints one live line: rates over the last interval, latency so far, lag.
func progressLine(out io.Writer, elapsed, interval time.Duration, c, prev [4]int64, pub, e2e *hdrhistogram.Histogram, lag int64) {
	s := interval.Seconds()
	if s <= 0 {
		s = 1
	}
	q := func(h *hdrhistogram.Histogram, p float64) string {
		if h.TotalCount() == 0 {
			return "-"
		}
		return ms(float64(h.ValueAtQuantile(p)) / 1e3)
	}
	fmt.Fprintf(out, "%5.0fs  produce %9.0f rec/s %8.2f MB/s  consume %9.0f rec/s %8.2f MB/s  publish p50 %s p99 %s ms  e2e p50 %s p99 %s ms  lag %d\n",
		elapsed.Seconds(), float64(c[0]-prev[0])/s, float64(c[1]-prev[1])/s/1e6, float64(c[2]-prev[2])/s, float64(c[3]-prev[3])/s/1e6,
		q(pub, 50), q(pub, 99), q(e2e, 50), q(e2e, 99), max(lag, 0))
}

// sortedKeys returns m's keys in order (stable output).
func sortedKeys(m map[string]int64) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
