package loadgen

import (
	"context"
	"testing"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
	"github.com/twmb/franz-go/pkg/kgo"
)

// countAtLeast counts the histogram's values >= v.
func countAtLeast(h *hdrhistogram.Histogram, v int64) int64 {
	var n int64
	for _, b := range h.Distribution() {
		if b.From >= v {
			n += b.Count
		}
	}
	return n
}

func testWorkload() Workload {
	w := Defaults()
	w.RecordSize = SizeDist{Kind: "fixed", Mean: 64}
	w.MaxBufferedRecords = 100
	return w
}

// A send that stalls 200 ms holds up every record scheduled during the stall; open-loop
// latency, counted from intended send times, must show the stall for each of them.
func TestScheduleStallCountsFromIntendedTime(t *testing.T) {
	const (
		rate     = 1000 // records/s: one every ms
		stallAt  = 100  // the 101st send stalls
		stall    = 200 * time.Millisecond
		duration = 500 * time.Millisecond
	)
	w := testWorkload()
	var sends int
	send := func(r *kgo.Record, promise func(*kgo.Record, error)) {
		if sends == stallAt {
			time.Sleep(stall)
		}
		sends++
		promise(r, nil) // acknowledged at once: all latency comes from the schedule
	}
	p := newProducer(0, &w, "t", rate, nil, send, 1)
	start := time.Now()
	p.measureFrom = start.UnixNano()
	p.run(context.Background(), start.UnixNano(), start.Add(duration).UnixNano())

	if want := int(rate * duration.Seconds()); sends != want {
		t.Fatalf("sent %d records, schedule holds %d", sends, want)
	}
	h, _ := p.pub.swap(NewHistogram())
	if h.TotalCount() != int64(sends) {
		t.Fatalf("recorded %d latencies, want %d", h.TotalCount(), sends)
	}
	// Record stallAt+k (k < 200) was intended k ms into the stall and sent when it ended,
	// so at least 200-k ms late: for every d, at least 200-d records are >= d ms late.
	for d := int64(10); d < 200; d += 10 {
		want := 200 - d - 1 // one record of slack for the timer's edge
		if got := countAtLeast(h, d*int64(time.Millisecond)); got < want {
			t.Errorf("%d records with latency >= %d ms, want >= %d: the stall is not charged to records scheduled during it", got, d, want)
		}
	}
	if lag := time.Duration(p.maxLag.Load()); lag < stall-5*time.Millisecond {
		t.Errorf("max schedule lag %s, want about %s", lag, stall)
	}
}

// Closed loop: at most the pool's records are in flight, and sending waits for acks.
func TestClosedLoopBoundsInFlight(t *testing.T) {
	w := testWorkload()
	w.MaxBufferedRecords = 8
	var pending []*kgo.Record
	maxPending := 0
	send := func(r *kgo.Record, promise func(*kgo.Record, error)) {
		pending = append(pending, r)
		maxPending = max(maxPending, len(pending))
		if len(pending) == 8 { // ack in bulk once the bound is reached, from another goroutine
			batch := pending
			pending = nil
			go func() {
				time.Sleep(time.Millisecond)
				for _, r := range batch {
					promise(r, nil)
				}
			}()
		}
	}
	p := newProducer(0, &w, "t", 0, nil, send, 1)
	start := time.Now()
	p.run(context.Background(), start.UnixNano(), start.Add(100*time.Millisecond).UnixNano())
	if maxPending > 8 || p.poolSize != 8 {
		t.Errorf("in flight reached %d with a bound of %d", maxPending, p.poolSize)
	}
	if p.blocked.Load() == 0 {
		t.Error("the producer never waited on the in-flight bound")
	}
}

func TestStampRoundTripAndFill(t *testing.T) {
	w := testWorkload()
	w.RecordSize = SizeDist{Kind: "uniform", Min: 1, Max: 40}
	w.Keys = KeyDist{Kind: "roundrobin", Count: 3}
	p := newProducer(7, &w, "t", 0, makeKeys(w.Keys), nil, 1)
	for i := range 100 {
		r := <-p.free
		p.fill(r, int64(1000+i))
		ts, prod, seq, ok := ReadStamp(r.Value)
		if !ok || ts != int64(1000+i) || prod != 7 || seq != uint64(i) {
			t.Fatalf("stamp %d read back as %d %d %d %v", i, ts, prod, seq, ok)
		}
		if len(r.Value) < StampSize || len(r.Value) > 40 {
			t.Fatalf("value size %d outside [%d, 40]", len(r.Value), StampSize)
		}
		if want := []byte(p.keys[i%3]); string(r.Key) != string(want) {
			t.Fatalf("key %q, want %q", r.Key, want)
		}
		p.onAck(r, nil)
	}
	if _, _, _, ok := ReadStamp(make([]byte, StampSize-1)); ok {
		t.Error("a short value read as stamped")
	}
}

// discardSender acknowledges at once; after n sends it stops acknowledging and cancels,
// so the producer drains its pool and returns.
func discardSender(n int, cancel func()) sendFunc {
	sent := 0
	return func(r *kgo.Record, promise func(*kgo.Record, error)) {
		sent++
		if sent < n {
			promise(r, nil)
		} else if sent == n {
			cancel()
		}
	}
}

// BenchmarkGeneratorClosedLoop is loadgen's own ceiling without a client or broker: the
// send loop (pool, size, key, stamp, clock reads) and the ack path (publish histogram).
func BenchmarkGeneratorClosedLoop(b *testing.B) {
	for _, size := range []int{100, 1024} {
		b.Run(SizeDist{Kind: "fixed", Mean: size}.String(), func(b *testing.B) {
			w := testWorkload()
			w.RecordSize = SizeDist{Kind: "fixed", Mean: size}
			w.Keys = KeyDist{Kind: "random", Count: 1000}
			w.MaxBufferedRecords = 1000
			ctx, cancel := context.WithCancel(context.Background())
			p := newProducer(0, &w, "t", 0, makeKeys(w.Keys), discardSender(b.N, cancel), 1)
			b.ReportAllocs()
			b.SetBytes(int64(size))
			b.ResetTimer()
			start := time.Now()
			p.run(ctx, start.UnixNano(), start.Add(time.Hour).UnixNano())
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
		})
	}
}

// BenchmarkGeneratorOpenLoop runs the scheduler at 2 M records/s for the benchmark's
// records; the reported max lag says whether the loop kept up.
func BenchmarkGeneratorOpenLoop(b *testing.B) {
	w := testWorkload()
	w.MaxBufferedRecords = 1000
	ctx, cancel := context.WithCancel(context.Background())
	p := newProducer(0, &w, "t", 2e6, nil, discardSender(b.N, cancel), 1)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	p.run(ctx, start.UnixNano(), start.Add(time.Hour).UnixNano())
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
	b.ReportMetric(float64(p.maxLag.Load())/1e6, "max-lag-ms")
}

// Records a stalled broker kept the producer from sending are charged their wait too.
func TestUnsentRecordsAreCharged(t *testing.T) {
	w := testWorkload()
	w.MaxBufferedRecords = 5
	send := func(*kgo.Record, func(*kgo.Record, error)) {} // never acknowledged
	p := newProducer(0, &w, "t", 1000, nil, send, 1)
	start := time.Now()
	p.measureFrom = start.UnixNano()
	stop := start.Add(100 * time.Millisecond)
	ctx, cancel := context.WithDeadline(context.Background(), stop)
	defer cancel()
	p.run(ctx, start.UnixNano(), stop.UnixNano())
	end := time.Now()
	if got := p.chargeUnsent(end.UnixNano()); got != 95 || p.sent.Load() != 5 {
		t.Fatalf("sent %d, unsent %d; want 5 and 95", p.sent.Load(), got)
	}
	h, _ := p.pub.swap(NewHistogram())
	// The last scheduled record (intended at 99 ms) waited at least until the end.
	if h.TotalCount() != 95 || h.Min() < int64(end.Sub(start.Add(99*time.Millisecond)))*999/1000 {
		t.Errorf("charged %d values, min %d ns", h.TotalCount(), h.Min())
	}
}

// Every record the schedule holds is sent when the run's deadline falls just after the last
// intended time: the deadline and the record's timer fire together, and the record must not be
// dropped (it was charged the whole drain, about a second, as an unsent record: a false stall).
func TestDeadlineRightAfterLastRecordSendsIt(t *testing.T) {
	for round := range 12 {
		w := testWorkload()
		var sends int
		send := func(r *kgo.Record, promise func(*kgo.Record, error)) {
			sends++
			promise(r, nil)
		}
		p := newProducer(0, &w, "t", 1000, nil, send, 1) // one record per ms, each waits on the timer
		start := time.Now()
		p.measureFrom = start.UnixNano()
		stop := start.Add(20*time.Millisecond + time.Microsecond) // the last record is due 1 µs before stop
		ctx, cancel := context.WithDeadline(context.Background(), stop)
		p.run(ctx, start.UnixNano(), stop.UnixNano())
		cancel()
		if unsent := p.chargeUnsent(time.Now().UnixNano()); unsent != 0 || sends != 21 {
			t.Fatalf("round %d: sent %d of 21 scheduled, %d unsent", round, sends, unsent)
		}
	}
	// A cancelled run (not its deadline) stops at once: records not yet due are not sent.
	w := testWorkload()
	var sends int
	p := newProducer(0, &w, "t", 1000, nil, func(r *kgo.Record, promise func(*kgo.Record, error)) { sends++; promise(r, nil) }, 1)
	start := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(10*time.Millisecond, cancel)
	p.run(ctx, start.UnixNano(), start.Add(time.Second).UnixNano())
	if sends > 20 {
		t.Errorf("a cancelled run sent %d records (about 10 were due)", sends)
	}
}
