package loadgen

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// maxPoolBytes bounds the preallocated payload buffers of one producer (large records
// get fewer records in flight).
const maxPoolBytes = 256 << 20

// PutStamp writes the intended send time, producer index and sequence into v[:StampSize].
func PutStamp(v []byte, intendedNs int64, producer uint32, seq uint64) {
	binary.BigEndian.PutUint64(v[0:8], uint64(intendedNs))
	binary.BigEndian.PutUint32(v[8:12], producer)
	binary.BigEndian.PutUint64(v[12:20], seq)
}

// ReadStamp reads what PutStamp wrote; ok is false for a value too short to hold it.
func ReadStamp(v []byte) (intendedNs int64, producer uint32, seq uint64, ok bool) {
	if len(v) < StampSize {
		return 0, 0, 0, false
	}
	return int64(binary.BigEndian.Uint64(v[0:8])), binary.BigEndian.Uint32(v[8:12]), binary.BigEndian.Uint64(v[12:20]), true
}

// sendFunc hands a record to the client; the callback runs once it is acknowledged or failed.
type sendFunc func(r *kgo.Record, promise func(*kgo.Record, error))

// producer sends records on a schedule (open loop, Rate > 0) or as fast as its pool of
// preallocated records allows (closed loop). Records are recycled in the promise callback,
// so sending allocates nothing beyond what kgo itself does.
type producer struct {
	id        uint32
	topic     string
	rate      float64 // records/s of this producer; 0 = closed loop
	free      chan *kgo.Record
	poolSize  int
	sizes     SizeDist
	keys      [][]byte
	keyRandom bool
	rng       *rand.Rand
	send      sendFunc
	promise   func(*kgo.Record, error) // p.onAck, bound once
	pub       *Recorder                // publish latency: ack - intended
	lagRec    *Recorder                // schedule lag: actual send - intended
	// measureFrom (Unix ns): records intended before it are warm-up and not recorded.
	measureFrom int64

	seq     uint64
	keyNext int
	timer   *time.Timer
	// The open-loop schedule: record i is intended at startNs + i*period.
	startNs   int64
	period    float64
	scheduled int64

	// Counters, read by the reporter while the producer runs.
	sent       atomic.Int64
	acked      atomic.Int64
	ackedBytes atomic.Int64
	failed     atomic.Int64
	maxLag     atomic.Int64 // ns
	blocked    atomic.Int64 // ns spent waiting for a free record (the in-flight bound)
	errs       errorCounts
	// idle reports whether nothing is in flight any more (every record back in the pool).
	idle func() bool
}

// newProducer preallocates the record pool: each record owns a value buffer of the
// largest size, filled once with the payload.
func newProducer(id uint32, w *Workload, topic string, rate float64, keys [][]byte, send sendFunc, seed uint64) *producer {
	return newProducerPool(id, w, topic, rate, keys, send, seed, true)
}

// newProducerPool is newProducer, without the record pool unless withPool (the native client
// keeps its own batches).
func newProducerPool(id uint32, w *Workload, topic string, rate float64, keys [][]byte, send sendFunc, seed uint64, withPool bool) *producer {
	largest := w.RecordSize.Largest()
	pool := min(w.MaxBufferedRecords, max(1, maxPoolBytes/largest))
	if !withPool {
		pool = 0
	}
	p := &producer{
		id:        id,
		topic:     topic,
		rate:      rate,
		free:      make(chan *kgo.Record, pool),
		poolSize:  pool,
		sizes:     w.RecordSize,
		keys:      keys,
		keyRandom: w.Keys.Kind == "random",
		rng:       rand.New(rand.NewPCG(seed, uint64(id))),
		send:      send,
		pub:       NewRecorder(),
		lagRec:    NewRecorder(),
	}
	p.promise = p.onAck
	p.idle = func() bool { return len(p.free) == p.poolSize }
	for range pool {
		buf := make([]byte, largest)
		fillPayload(buf, w.Payload, p.rng)
		p.free <- &kgo.Record{Topic: topic, Value: buf}
	}
	return p
}

// run sends from start until stop (Unix ns) or until ctx is done.
func (p *producer) run(ctx context.Context, startNs, stopNs int64) {
	var period float64
	if p.rate > 0 {
		period = 1e9 / p.rate
		p.startNs, p.period = startNs, period
		p.scheduled = int64(math.Ceil(float64(stopNs-startNs) / period))
	}
	done := ctx.Done()
	for i := int64(0); ; i++ {
		var intended int64
		if p.rate > 0 {
			if i >= p.scheduled {
				return
			}
			intended = startNs + int64(float64(i)*period)
			if d := intended - time.Now().UnixNano(); d > 0 && !p.wait(ctx, time.Duration(d), intended) {
				return
			}
		}
		var r *kgo.Record
		select {
		case r = <-p.free:
		default:
			// The in-flight bound is reached: wait, and count the wait as back-pressure.
			t0 := time.Now()
			select {
			case r = <-p.free:
			case <-done:
			}
			p.blocked.Add(int64(time.Since(t0)))
			if r == nil {
				return
			}
		}
		now := time.Now().UnixNano()
		if p.rate == 0 {
			if now >= stopNs {
				p.free <- r
				return
			}
			intended = now
		} else if lag := now - intended; lag > 0 {
			if lag > p.maxLag.Load() {
				p.maxLag.Store(lag)
			}
			if intended >= p.measureFrom {
				p.lagRec.Record(lag)
			}
		}
		p.fill(r, intended)
		p.sent.Add(1)
		p.send(r, p.promise)
	}
}

// chargeUnsent accounts for the scheduled records never sent (the run ended while the
// in-flight bound held the producer back): each waited at least from its intended time
// until nowNs, so that wait goes into the publish latency, as open loop demands.
// It returns how many there were.
func (p *producer) chargeUnsent(nowNs int64) int64 {
	if p.rate == 0 {
		return 0
	}
	sent := p.sent.Load()
	for i := sent; i < p.scheduled; i++ {
		if intended := p.startNs + int64(float64(i)*p.period); intended >= p.measureFrom {
			p.pub.Record(nowNs - intended)
		}
	}
	return p.scheduled - sent
}

// fill sets the record's size, key and stamp.
func (p *producer) fill(r *kgo.Record, intended int64) {
	n := p.nextSize(cap(r.Value))
	r.Value = r.Value[:n]
	PutStamp(r.Value, intended, p.id, p.seq)
	p.seq++
	if len(p.keys) > 0 {
		if p.keyRandom {
			r.Key = p.keys[p.rng.IntN(len(p.keys))]
		} else {
			r.Key = p.keys[p.keyNext]
			p.keyNext = (p.keyNext + 1) % len(p.keys)
		}
	}
}

func (p *producer) nextSize(largest int) int {
	n := p.sizes.Mean
	switch p.sizes.Kind {
	case "uniform":
		n = p.sizes.Min + p.rng.IntN(p.sizes.Max-p.sizes.Min+1)
	case "normal":
		n = int(float64(p.sizes.Mean) + p.rng.NormFloat64()*float64(p.sizes.StdDev))
	}
	return min(max(n, StampSize), largest)
}

// onAck records the publish latency and returns the record to the pool.
func (p *producer) onAck(r *kgo.Record, err error) {
	now := time.Now().UnixNano()
	intended, _, _, _ := ReadStamp(r.Value)
	if err != nil {
		p.failed.Add(1)
		p.errs.add(err)
	} else {
		p.acked.Add(1)
		p.ackedBytes.Add(int64(len(r.Value)))
		if intended >= p.measureFrom {
			p.pub.Record(now - intended)
		}
	}
	*r = kgo.Record{Topic: p.topic, Value: r.Value[:cap(r.Value)]}
	p.free <- r
}

// wait sleeps d on the producer's one timer (no allocation per record), until the record
// intended at intended (Unix ns) is due; it reports whether that time came rather than ctx ending.
func (p *producer) wait(ctx context.Context, d time.Duration, intended int64) bool {
	if d < 50*time.Microsecond {
		// Too short for a timer to be worth it: send a little early. Even if ctx has ended meanwhile:
		// the record is due before the deadline, and dropping it would leave the schedule short.
		return true
	}
	if p.timer == nil {
		p.timer = time.NewTimer(d)
	} else {
		p.timer.Reset(d)
	}
	select {
	case <-p.timer.C:
		return true
	case <-ctx.Done():
		p.timer.Stop()
		// The schedule decides, not which channel this goroutine saw first: the run's deadline
		// and this record's timer often fire together, and a record due before the deadline is
		// still sent. (timer.Stop cannot tell: since Go 1.23 it reports true for a timer that
		// fired but whose value was not received.) A cancelled run stops at once.
		return time.Now().UnixNano() >= intended
	}
}

// sleep waits d or until ctx is done; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d < 50*time.Microsecond {
		return ctx.Err() == nil // too short for a timer to be worth it
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// fillPayload fills b with random bytes, or with text that compresses like log lines.
func fillPayload(b []byte, kind string, rng *rand.Rand) {
	if kind != "text" {
		for i := 0; i+8 <= len(b); i += 8 {
			binary.LittleEndian.PutUint64(b[i:], rng.Uint64())
		}
		for i := len(b) &^ 7; i < len(b); i++ {
			b[i] = byte(rng.Uint32())
		}
		return
	}
	i := 0
	for i < len(b) {
		w := textWords[rng.IntN(len(textWords))]
		i += copy(b[i:], w)
		if i < len(b) {
			b[i] = ' '
			i++
		}
	}
}

var textWords = []string{
	"GET", "POST", "/api/v1/orders", "/api/v1/users", "200", "404", "500", "user_id=", "order_id=",
	"latency_ms=", "status=ok", "status=error", "region=eu-west-1", "region=us-east-1", "INFO", "WARN",
	"ERROR", "request", "completed", "started", "session", "checkout", "payment", "accepted", "the",
	"customer", "shipment", "inventory", "timeout", "retry", "{\"event\":", "\"click\",", "\"ts\":",
	"1700000000", "true", "false", "null", "}", "trace=", "span=", "host=web-01", "host=web-02",
}

// makeKeys returns the workload's distinct keys, or nil for records without keys.
func makeKeys(k KeyDist) [][]byte {
	if k.Kind == "none" || k.Count == 0 {
		return nil
	}
	keys := make([][]byte, k.Count)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "key-%08d", i)
	}
	return keys
}

// errorCounts counts errors by Kafka error name (or "client: ..." for errors that are not Kafka's).
type errorCounts struct {
	mu sync.Mutex
	m  map[string]int64
}

func (e *errorCounts) add(err error) { e.addN(err, 1) }

// addN counts n records failed with err.
func (e *errorCounts) addN(err error, n int64) {
	var name string
	var ke *kerr.Error
	switch {
	case errors.As(err, &ke):
		name = fmt.Sprintf("%s(%d)", ke.Message, ke.Code)
	default:
		// Client-side errors carry details (addresses, counts): keep the start to bound the map.
		name = "client: " + err.Error()
		if len(name) > 80 {
			name = name[:80]
		}
	}
	e.mu.Lock()
	if e.m == nil {
		e.m = make(map[string]int64)
	}
	e.m[name] += n
	e.mu.Unlock()
}

// addTo adds the counts into m.
func (e *errorCounts) addTo(m map[string]int64) {
	e.mu.Lock()
	for k, v := range e.m {
		m[k] += v
	}
	e.mu.Unlock()
}
