package loadgen

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicebroker/sluice/loadgen/wire"
)

// The native client (-client native): loadgen's own producer, for figures that are the broker's
// limit rather than the client's. One nativeProducer is one producer client: it follows the same
// open-loop schedule as the kgo producer, appends stamped records into per-partition batches
// (encoded once per batch object, then only restamped), seals them (header, sequence, CRC,
// compression) and hands them to one sender per leader connection, which pipelines produce requests
// up to -max-in-flight; a reader per connection takes the answers in order.

const (
	dialTimeout      = 10 * time.Second
	requestTimeoutMs = 30000
	maxAttempts      = 1000 // with 100 ms between rounds; the drain deadline ends retries first
)

// nativeProducer is one producer client of the native mode.
type nativeProducer struct {
	*producer                // schedule, counters, recorders
	dialTurn   atomic.Uint32 // anyConn's starting broker, turning
	w          *Workload
	nparts     int32
	acks       int16
	linger     int64 // ns
	maxBytes   int
	comp       wire.Compressor
	payload    []byte // random or text bytes records' values are cut from
	window     int    // how far into payload a record's value may start
	maxRecords int    // the most records a batch can hold
	clockN     int    // closed loop: records until the clock is read again
	clockEvery int    // closed loop: read the clock every this many records (small records only)
	clockNs    int64

	pid   int64
	epoch int16
	seqs  []int32 // next sequence per partition (producer goroutine)
	order int64   // seal order, for re-sorting retries

	// Producer goroutine state.
	open       []*wire.Batch // the open batch per partition
	openSince  []int64
	openParts  []int32
	lingerNext int64
	cur        int32 // the sticky partition (records without keys)
	openRecs   int   // records in open batches: counted into sent and inflight when sealed (one atomic add per batch, not per record)

	inflight atomic.Int64 // records appended and not yet acknowledged or failed
	wake     chan struct{}
	freeMu   sync.Mutex
	free     []*wire.Batch

	mu       sync.Mutex // guards conns, leaders, connOf, retries, closed
	brokers  map[int32]string
	conns    map[int32]*pconn
	connOf   []atomic.Pointer[pconn] // per partition, nil while its leader is unknown; written under mu
	retries  []*wire.Batch
	recoverC chan struct{}
	closed   bool
	done     chan struct{}
	deadline atomic.Int64 // Unix ns after which batches are failed rather than retried
}

func newNativeProducer(p *producer, w *Workload, topic string) (*nativeProducer, error) {
	np := &nativeProducer{
		producer: p, w: w, nparts: w.Partitions, linger: int64(w.Linger.D()),
		maxBytes: int(w.BatchMaxBytes), wake: make(chan struct{}, 1),
		brokers: map[int32]string{}, conns: map[int32]*pconn{}, connOf: make([]atomic.Pointer[pconn], w.Partitions),
		recoverC: make(chan struct{}, 1), done: make(chan struct{}),
		open: make([]*wire.Batch, w.Partitions), openSince: make([]int64, w.Partitions), seqs: make([]int32, w.Partitions),
		lingerNext: 1<<63 - 1, pid: -1, epoch: -1,
	}
	np.deadline.Store(1<<63 - 1)
	switch w.Acks {
	case "0":
		np.acks = 0
	case "1":
		np.acks = 1
	default:
		np.acks = -1
	}
	var err error
	if np.comp, err = wire.NewCompressor(w.Compression); err != nil {
		return nil, err
	}
	largest := w.RecordSize.Largest()
	smallest := w.RecordSize.Mean
	if w.RecordSize.Kind == "uniform" {
		smallest = w.RecordSize.Min
	}
	np.maxRecords = min(np.maxBytes/(max(smallest, StampSize)+8), 1<<16)
	// A clock read costs as much as appending a small record; with records up to 256 bytes, 16 of
	// them take well under a microsecond, so their intended times share one reading. Larger records
	// read the clock each.
	np.clockEvery = 1
	if largest <= 256 {
		np.clockEvery = 16
	}
	np.window = 64 << 10
	np.payload = make([]byte, largest+np.window)
	fillPayload(np.payload, w.Payload, p.rng)
	p.poolSize = w.MaxBufferedRecords
	p.idle = func() bool { return np.inflight.Load() == 0 }
	if err := np.refresh(); err != nil {
		return nil, err
	}
	if w.Idempotent {
		if err := np.initProducerID(); err != nil {
			return nil, err
		}
	}
	go np.recoverLoop()
	return np, nil
}

// anyConn dials the first broker that answers: a known one, or a bootstrap one.
func (np *nativeProducer) anyConn() (*wire.Conn, error) {
	np.mu.Lock()
	addrs := append([]string(nil), np.w.Brokers...)
	for _, a := range np.brokers {
		addrs = append(addrs, a)
	}
	// Each call starts at the next broker, as clients pick one at random: a broker that has just
	// restarted may not know the topic yet, and the retries must not ask only it.
	start := int(np.dialTurn.Add(1))
	np.mu.Unlock()
	var lastErr error
	for i := range addrs {
		a := addrs[(start+i)%len(addrs)]
		c, err := wire.Dial(a, dialTimeout)
		if err == nil {
			return c, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

// nativeMetadata asks for one topic's leaders.
func nativeMetadata(c *wire.Conn, topic string) (*kmsg.MetadataResponse, error) {
	req := kmsg.NewPtrMetadataRequest()
	req.SetVersion(7)
	t := kmsg.NewMetadataRequestTopic()
	t.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, t)
	resp, err := c.Request(req, 15*time.Second)
	if err != nil {
		return nil, err
	}
	return resp.(*kmsg.MetadataResponse), nil
}

// refresh reads the leaders of every partition (waiting for elections up to 15 s) and points
// each partition at its leader's connection, dialling new ones.
func (np *nativeProducer) refresh() error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := np.refreshOnce()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		select {
		case <-np.done:
			return errClosed
		case <-time.After(100 * time.Millisecond):
		}
	}
}

var errClosed = errors.New("client closed")

func (np *nativeProducer) refreshOnce() error {
	c, err := np.anyConn()
	if err != nil {
		return err
	}
	md, err := nativeMetadata(c, np.topic)
	c.Close()
	if err != nil {
		return err
	}
	np.mu.Lock()
	defer np.mu.Unlock()
	if np.closed {
		return errClosed
	}
	for _, b := range md.Brokers {
		np.brokers[b.NodeID] = fmt.Sprintf("%s:%d", b.Host, b.Port)
	}
	// A broken connection's unsent batches go back for retry before it is replaced.
	for id, pc := range np.conns {
		if pc.dead.Load() {
			np.retries = append(np.retries, pc.takeQueued()...)
			delete(np.conns, id)
		}
	}
	if len(md.Topics) != 1 {
		return fmt.Errorf("metadata: %d topics", len(md.Topics))
	}
	t := md.Topics[0]
	if err := kerr.ErrorForCode(t.ErrorCode); err != nil {
		return fmt.Errorf("metadata %s: %w", np.topic, err)
	}
	var missing error
	seen := 0
	for _, p := range t.Partitions {
		if p.Partition < 0 || p.Partition >= np.nparts {
			continue
		}
		seen++
		pc := np.conns[p.Leader]
		if pc == nil {
			addr, ok := np.brokers[p.Leader]
			if p.ErrorCode != 0 || !ok {
				np.connOf[p.Partition].Store(nil)
				missing = fmt.Errorf("partition %d: no leader (%v)", p.Partition, kerr.ErrorForCode(p.ErrorCode))
				continue
			}
			wc, err := wire.Dial(addr, dialTimeout)
			if err != nil {
				np.connOf[p.Partition].Store(nil)
				missing = err
				continue
			}
			pc = newPconn(np, wc)
			np.conns[p.Leader] = pc
		}
		np.connOf[p.Partition].Store(pc)
	}
	if seen < int(np.nparts) {
		return fmt.Errorf("metadata %s: %d of %d partitions", np.topic, seen, np.nparts)
	}
	return missing
}

func (np *nativeProducer) initProducerID() error {
	c, err := np.anyConn()
	if err != nil {
		return err
	}
	defer c.Close()
	req := kmsg.NewPtrInitProducerIDRequest()
	req.SetVersion(1)
	req.TransactionTimeoutMillis = 60000
	resp, err := c.Request(req, 15*time.Second)
	if err != nil {
		return fmt.Errorf("InitProducerID: %w", err)
	}
	r := resp.(*kmsg.InitProducerIDResponse)
	if err := kerr.ErrorForCode(r.ErrorCode); err != nil {
		return fmt.Errorf("InitProducerID: %w", err)
	}
	np.pid, np.epoch = r.ProducerID, r.ProducerEpoch
	return nil
}

// run sends from startNs until stopNs (Unix ns) or until ctx ends, on the same schedule as the
// kgo producer.
func (np *nativeProducer) run(ctx context.Context, startNs, stopNs int64) {
	p := np.producer
	defer np.sealAll()
	var period float64
	if p.rate > 0 {
		period = 1e9 / p.rate
		p.startNs, p.period = startNs, period
		p.scheduled = int64(math.Ceil(float64(stopNs-startNs) / period))
	}
	for i := int64(0); ; i++ {
		var intended int64
		if p.rate > 0 {
			if i >= p.scheduled {
				return
			}
			intended = startNs + int64(float64(i)*period)
			if !np.waitUntil(ctx, intended) {
				return
			}
		}
		if np.inflight.Load()+int64(np.openRecs) >= int64(p.poolSize) {
			// The in-flight bound: send what is open, wait for acknowledgements, count the wait.
			np.sealAll()
			t0 := time.Now()
			for np.inflight.Load() >= int64(p.poolSize) {
				select {
				case <-np.wake:
				case <-ctx.Done():
					p.blocked.Add(int64(time.Since(t0)))
					return
				}
			}
			p.blocked.Add(int64(time.Since(t0)))
			np.clockN = 0
		}
		var now int64
		if p.rate == 0 {
			// Closed loop: the clock is read every 16 records (a few µs at these rates), not per record.
			if np.clockN--; np.clockN < 0 {
				np.clockNs, np.clockN = time.Now().UnixNano(), np.clockEvery-1
			}
			now = np.clockNs
			if now >= stopNs {
				return
			}
			intended = now
		} else {
			now = time.Now().UnixNano()
			if lag := now - intended; lag > 0 {
				if lag > p.maxLag.Load() {
					p.maxLag.Store(lag)
				}
				if intended >= p.measureFrom {
					p.lagRec.Record(lag)
				}
			}
		}
		if now >= np.lingerNext {
			np.sealExpired(now)
		}
		np.append(intended, now)
	}
}

// waitUntil sleeps until intended, sealing batches whose linger ends first, and batches a freed
// connection can take at once (linger 0).
func (np *nativeProducer) waitUntil(ctx context.Context, intended int64) bool {
	for {
		now := time.Now().UnixNano()
		if now >= np.lingerNext {
			np.sealExpired(now)
		}
		if np.linger == 0 && len(np.openParts) > 0 {
			np.sealIdle()
		}
		until := min(intended, np.lingerNext)
		d := time.Duration(until - now)
		if until == intended && d < 50*time.Microsecond {
			return true // too short for a timer: send a little early
		}
		if d <= 0 {
			continue
		}
		if p := np.producer; p.timer == nil {
			p.timer = time.NewTimer(d)
		} else {
			p.timer.Reset(d)
		}
		select {
		case <-np.timer.C:
		case <-np.wake:
			np.timer.Stop()
		case <-ctx.Done():
			np.timer.Stop()
			return time.Now().UnixNano() >= intended
		}
	}
}

// append adds one record to its partition's open batch and seals the batch when it is full, or
// at once with linger 0 when its connection has room.
func (np *nativeProducer) append(intended, now int64) {
	p := np.producer
	size := p.nextSize(len(np.payload) - np.window)
	var key []byte
	keyIdx := int32(-1)
	part := np.cur
	if len(p.keys) > 0 {
		if p.keyRandom {
			keyIdx = int32(p.rng.IntN(len(p.keys)))
		} else {
			keyIdx = int32(p.keyNext)
			p.keyNext = (p.keyNext + 1) % len(p.keys)
		}
		key = p.keys[keyIdx]
		part = int32((murmur2(key) & 0x7fffffff) % uint32(np.nparts))
	}
	b := np.open[part]
	if b != nil && b.Len()+size+len(key)+wire.RecordOverhead > np.maxBytes {
		np.seal(part)
		b = nil
		if keyIdx < 0 {
			part = np.cur
		}
	}
	if b == nil {
		b = np.getBatch()
		b.Partition, b.Part = part, int(part)
		np.open[part] = b
		np.openSince[part] = now
		np.openParts = append(np.openParts, part)
		if np.linger > 0 { // linger 0 seals when the connection can take the batch (below), not by time
			np.lingerNext = min(np.lingerNext, now+np.linger)
		}
	}
	// A position's payload window is fixed, so a reused record keeps its bytes.
	off := (b.N * 4099) % np.window
	b.Append(size, keyIdx, key, np.payload[off:], intended, p.id, p.seq)
	p.seq++
	np.openRecs++
	switch {
	case b.Len()+size+len(key)+wire.RecordOverhead > np.maxBytes:
		np.seal(part)
	case np.linger == 0:
		if pc := np.connFor(part); pc != nil && pc.idle() {
			np.seal(part)
		}
	}
}

func (np *nativeProducer) connFor(part int32) *pconn { return np.connOf[part].Load() }

func (np *nativeProducer) getBatch() *wire.Batch {
	np.freeMu.Lock()
	defer np.freeMu.Unlock()
	if n := len(np.free); n > 0 {
		b := np.free[n-1]
		np.free = np.free[:n-1]
		return b
	}
	return wire.NewBatch(min(np.maxBytes, 1<<20), np.maxRecords)
}

func (np *nativeProducer) putBatch(b *wire.Batch) {
	b.Reset()
	np.freeMu.Lock()
	np.free = append(np.free, b)
	np.freeMu.Unlock()
}

// seal closes a partition's open batch and queues it on the partition's leader connection.
func (np *nativeProducer) seal(part int32) {
	b := np.open[part]
	if b == nil {
		return
	}
	np.open[part] = nil
	if i := slices.Index(np.openParts, part); i >= 0 {
		np.openParts = slices.Delete(np.openParts, i, i+1)
	}
	if b.N == 0 {
		np.putBatch(b)
		return
	}
	np.account(b)
	seq := int32(-1)
	if np.pid >= 0 {
		seq = np.seqs[part]
		np.seqs[part] += int32(b.N)
	}
	now := time.Now()
	b.Seal(np.comp, np.pid, np.epoch, seq, now.UnixMilli())
	b.SealedAt = now.UnixNano()
	np.order++
	b.Order = np.order
	np.clockN = 0 // sealing (compression) takes time: read the clock for the next record
	if len(np.producer.keys) == 0 && part == np.cur {
		np.cur = (np.cur + 1) % np.nparts // sticky partitioning: the next batch goes to the next partition
	}
	np.dispatch(b)
}

// account counts a batch leaving the open set as sent and in flight.
func (np *nativeProducer) account(b *wire.Batch) {
	np.openRecs -= b.N
	np.producer.sent.Add(int64(b.N))
	np.inflight.Add(int64(b.N))
}

func (np *nativeProducer) sealAll() {
	for len(np.openParts) > 0 {
		np.seal(np.openParts[0])
	}
	np.lingerNext = 1<<63 - 1
}

func (np *nativeProducer) sealExpired(now int64) {
	next := int64(1<<63 - 1)
	for i := len(np.openParts) - 1; i >= 0; i-- { // backwards: seal removes element i
		part := np.openParts[i]
		if since := np.openSince[part]; now >= since+np.linger {
			np.seal(part)
		} else {
			next = min(next, since+np.linger)
		}
	}
	np.lingerNext = next
}

func (np *nativeProducer) sealIdle() {
	for i := len(np.openParts) - 1; i >= 0; i-- { // backwards: seal removes element i
		part := np.openParts[i]
		if pc := np.connFor(part); pc != nil && pc.idle() {
			np.seal(part)
		}
	}
}

// dispatch queues a sealed batch on its partition's connection, or for recovery if it has none.
func (np *nativeProducer) dispatch(b *wire.Batch) {
	np.mu.Lock()
	pc := np.connOf[b.Partition].Load()
	if pc == nil || pc.dead.Load() || np.closed {
		np.retries = append(np.retries, b)
		np.mu.Unlock()
		np.kickRecover()
		return
	}
	pc.push(b)
	np.mu.Unlock()
}

// done finishes a batch: acknowledged (err nil) or failed.
func (np *nativeProducer) batchDone(b *wire.Batch, err error, now int64) {
	p := np.producer
	if err == nil {
		p.pub.Lock()
		for _, t := range b.Intended {
			if t >= p.measureFrom {
				p.pub.RecordLocked(now - t)
			}
		}
		p.pub.Unlock()
		p.acked.Add(int64(b.N))
		p.ackedBytes.Add(b.Bytes)
	} else {
		p.failed.Add(int64(b.N))
		p.errs.addN(err, int64(b.N))
	}
	np.inflight.Add(-int64(b.N))
	np.putBatch(b)
	select {
	case np.wake <- struct{}{}:
	default:
	}
}

// retry takes back a batch that failed with a retriable error (or whose connection broke).
func (np *nativeProducer) retry(b *wire.Batch, err error) {
	b.Attempts++
	if b.Attempts > maxAttempts || time.Now().UnixNano() > np.deadline.Load() {
		np.batchDone(b, err, time.Now().UnixNano())
		return
	}
	np.mu.Lock()
	np.retries = append(np.retries, b)
	np.mu.Unlock()
	np.kickRecover()
}

func (np *nativeProducer) kickRecover() {
	select {
	case np.recoverC <- struct{}{}:
	default:
	}
}

// recoverLoop refreshes the leaders after failures and requeues the batches to retry, each
// partition's in their original order ahead of what was queued after them.
func (np *nativeProducer) recoverLoop() {
	for {
		select {
		case <-np.done:
			return
		case <-np.recoverC:
		}
		select {
		case <-np.done:
			return
		case <-time.After(100 * time.Millisecond): // backoff: let an election finish
		}
		_ = np.refreshOnce()
		np.mu.Lock()
		if np.closed {
			np.mu.Unlock()
			return
		}
		all := np.retries
		np.retries = nil
		for _, pc := range np.conns {
			all = append(all, pc.takeQueued()...)
		}
		slices.SortFunc(all, func(a, b *wire.Batch) int { return cmp.Compare(a.Order, b.Order) })
		stuck := false
		for _, b := range all {
			if pc := np.connOf[b.Partition].Load(); pc != nil && !pc.dead.Load() {
				pc.push(b)
			} else {
				np.retries = append(np.retries, b)
				stuck = true
			}
		}
		np.mu.Unlock()
		if stuck {
			np.kickRecover()
		}
	}
}

// flush waits until everything appended is acknowledged or failed, or ctx ends.
func (np *nativeProducer) flush(ctx context.Context) {
	np.deadline.Store(deadlineOf(ctx))
	for np.inflight.Load() > 0 {
		select {
		case <-ctx.Done():
			return
		case <-np.wake:
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func deadlineOf(ctx context.Context) int64 {
	if d, ok := ctx.Deadline(); ok {
		return d.UnixNano()
	}
	return 1<<63 - 1
}

// close fails whatever is still unacknowledged and closes the connections.
func (np *nativeProducer) close() {
	np.mu.Lock()
	if np.closed {
		np.mu.Unlock()
		return
	}
	np.closed = true
	close(np.done)
	left := np.retries
	np.retries = nil
	conns := make([]*pconn, 0, len(np.conns))
	for _, pc := range np.conns {
		conns = append(conns, pc)
		left = append(left, pc.takeQueued()...)
	}
	np.mu.Unlock()
	for _, pc := range conns {
		pc.fail(errClosed)
	}
	now := time.Now().UnixNano()
	for _, b := range left {
		np.batchDone(b, errClosed, now)
	}
	for part, b := range np.open {
		if b != nil && b.N > 0 {
			np.open[part] = nil
			np.account(b)
			np.batchDone(b, errClosed, now)
		}
	}
}

// pconn is one leader connection of a native producer: a queue of sealed batches per partition,
// a sender pipelining produce requests, and a reader taking the answers in order.
type pconn struct {
	np       *nativeProducer
	c        *wire.Conn
	mu       sync.Mutex
	queues   map[int32][]*wire.Batch
	pending  []int32 // partitions with queued batches, in arrival order
	queued   atomic.Int64
	kick     chan struct{}
	inflight chan *preq
	freeReqs chan *preq
	dead     atomic.Bool
	failOnce sync.Once
	closed   chan struct{}
}

// preq is one produce request in flight.
type preq struct {
	batches []*wire.Batch
	req     wire.ProduceRequest
}

func newPconn(np *nativeProducer, c *wire.Conn) *pconn {
	n := np.w.MaxInFlight
	if np.w.Idempotent {
		n = min(n, 5) // Kafka keeps the last five batches per producer and partition for deduplication
	}
	pc := &pconn{np: np, c: c, queues: map[int32][]*wire.Batch{}, kick: make(chan struct{}, 1),
		inflight: make(chan *preq, n), freeReqs: make(chan *preq, n+2), closed: make(chan struct{})}
	for range n + 2 {
		pc.freeReqs <- &preq{}
	}
	go pc.sendLoop()
	if np.acks != 0 {
		go pc.readLoop()
	}
	return pc
}

// idle reports whether the connection could send a batch at once.
func (pc *pconn) idle() bool {
	return pc.queued.Load() == 0 && len(pc.inflight) < cap(pc.inflight) && !pc.dead.Load()
}

func (pc *pconn) push(b *wire.Batch) {
	pc.mu.Lock()
	q := pc.queues[b.Partition]
	if len(q) == 0 {
		pc.pending = append(pc.pending, b.Partition)
	}
	pc.queues[b.Partition] = append(q, b)
	pc.queued.Add(1)
	pc.mu.Unlock()
	select {
	case pc.kick <- struct{}{}:
	default:
	}
}

// takeQueued removes every queued (unsent) batch.
func (pc *pconn) takeQueued() []*wire.Batch {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	var out []*wire.Batch
	for _, part := range pc.pending {
		out = append(out, pc.queues[part]...)
		pc.queues[part] = pc.queues[part][:0]
	}
	pc.queued.Add(-int64(len(out)))
	pc.pending = pc.pending[:0]
	return out
}

func (pc *pconn) sendLoop() {
	np := pc.np
	for {
		select {
		case <-pc.kick:
		case <-pc.closed:
			return
		}
		for {
			var r *preq
			select {
			case r = <-pc.freeReqs:
			case <-pc.closed:
				return
			}
			pc.mu.Lock()
			next := pc.pending[:0]
			for _, part := range pc.pending {
				q := pc.queues[part]
				r.batches = append(r.batches, q[0])
				q = q[1:]
				if len(q) > 0 {
					next = append(next, part)
				} else {
					q = pc.queues[part][:0]
				}
				pc.queues[part] = q
			}
			pc.pending = next
			pc.queued.Add(-int64(len(r.batches)))
			pc.mu.Unlock()
			if len(r.batches) == 0 {
				pc.freeReqs <- r
				break
			}
			if np.acks != 0 {
				select {
				case pc.inflight <- r:
				case <-pc.closed:
					pc.retryAll(r, errClosed)
					return
				}
			}
			r.req.Begin(pc.c.NextCorrelation(), np.acks, requestTimeoutMs)
			r.req.Topic(np.topic)
			for _, b := range r.batches {
				r.req.Partition(b.Partition, b.Wire())
			}
			head, parts := r.req.Finish()
			if err := pc.c.WriteVec(head, parts); err != nil {
				pc.fail(err)
				if np.acks == 0 {
					pc.retryAll(r, err)
				}
				pc.drain(err) // r may have gone in flight after fail's drain ran
				return
			}
			if np.acks == 0 {
				now := time.Now().UnixNano()
				for _, b := range r.batches {
					np.batchDone(b, nil, now)
				}
				r.batches = r.batches[:0]
				pc.freeReqs <- r
			}
		}
	}
}

func (pc *pconn) retryAll(r *preq, err error) {
	for _, b := range r.batches {
		pc.np.retry(b, err)
	}
	r.batches = r.batches[:0]
}

func (pc *pconn) readLoop() {
	np := pc.np
	var buf []byte
	for {
		body, grown, err := pc.c.ReadResponse(buf)
		buf = grown
		if err != nil {
			pc.fail(err)
			return
		}
		var r *preq
		select {
		case r = <-pc.inflight:
		default:
			pc.fail(errors.New("response without a request"))
			return
		}
		now := time.Now().UnixNano()
		next := 0
		perr := wire.ParseProduceResponse(body, func(res wire.ProduceResult) {
			if string(res.Topic) != np.topic {
				return
			}
			// Answers come in request order; search only if not.
			i := next
			if i >= len(r.batches) || r.batches[i] == nil || r.batches[i].Partition != res.Partition {
				i = slices.IndexFunc(r.batches, func(b *wire.Batch) bool { return b != nil && b.Partition == res.Partition })
				if i < 0 {
					return
				}
			}
			next = i + 1
			b := r.batches[i]
			r.batches[i] = nil
			switch res.ErrorCode {
			case 0, 46: // DUPLICATE_SEQUENCE_NUMBER: written before (a retry)
				np.batchDone(b, nil, now)
				return
			}
			err := kerr.ErrorForCode(res.ErrorCode)
			if kerr.IsRetriable(err) || res.ErrorCode == 45 { // OUT_OF_ORDER_SEQUENCE_NUMBER: an earlier batch is being retried
				np.retry(b, err)
				return
			}
			np.batchDone(b, err, now)
		})
		for _, b := range r.batches {
			if b != nil { // not answered
				np.retry(b, errors.New("partition missing from produce response"))
			}
		}
		r.batches = r.batches[:0]
		pc.freeReqs <- r
		if perr != nil {
			pc.fail(perr)
			return
		}
	}
}

// fail closes the connection once and sends everything on it back for retry.
func (pc *pconn) fail(err error) {
	pc.failOnce.Do(func() {
		pc.dead.Store(true)
		close(pc.closed)
		_ = pc.c.Close()
		go pc.drain(err)
	})
}

// drain sends what is in flight and queued on a failed connection back for retry.
func (pc *pconn) drain(err error) {
	for {
		select {
		case r := <-pc.inflight:
			pc.retryAll(r, err)
			pc.freeReqs <- r
			continue
		default:
		}
		break
	}
	for _, b := range pc.takeQueued() {
		pc.np.retry(b, err)
	}
}

// murmur2 is Kafka's default partitioner hash (as franz-go's and the Java client's).
func murmur2(b []byte) uint32 {
	const (
		seed uint32 = 0x9747b28c
		m    uint32 = 0x5bd1e995
		r           = 24
	)
	h := seed ^ uint32(len(b))
	for ; len(b) >= 4; b = b[4:] {
		k := uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	switch len(b) {
	case 3:
		h ^= uint32(b[2]) << 16
		fallthrough
	case 2:
		h ^= uint32(b[1]) << 8
		fallthrough
	case 1:
		h ^= uint32(b[0])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return h
}
