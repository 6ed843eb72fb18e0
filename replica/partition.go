package replica

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	sm "github.com/lni/dragonboat/v4/statemachine"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/sluicebroker/sluice/batch"
	"github.com/sluicebroker/sluice/metrics"
	"github.com/sluicebroker/sluice/quorum"
	"github.com/sluicebroker/sluice/raftlog"
	"github.com/sluicebroker/sluice/segment"
)

// ProduceResult is the outcome of a committed produce.
type ProduceResult struct {
	BaseOffset     int64
	LogAppendTime  int64 // -1 unless the topic uses LogAppendTime
	LogStartOffset int64
}

// defaultProduceTimeout bounds Produce when its context has no deadline.
const defaultProduceTimeout = 30 * time.Second

// Partition is one partition hosted on this node: the write path into its Raft
// group and the read side of its segment log.
type Partition struct {
	topic     string
	partition int32
	shardID   uint64
	dir       string
	host      *quorum.Host
	logger    *slog.Logger
	started   time.Time // when the Manager started this replica (set before it is published)

	config atomic.Pointer[TopicConfig]
	log    atomic.Pointer[segment.Log] // nil while the state machine is not open

	startFloor atomic.Int64 // the log start offset DeleteRecords set (cluster metadata)

	hw       atomic.Int64 // next offset past applied data
	lso      atomic.Int64 // last stable offset: hw, or the first offset of the oldest open transaction
	txns     atomic.Pointer[producerState]
	replayTo atomic.Int64 // log end before the last restart; below it, hw is still catching up

	snapshotsInstalled atomic.Int64 // logs received from a leader's snapshot stream

	inSync   atomic.Bool // as a follower, caught up at the last check (leadership.go)
	lagCheck atomic.Bool // a check is in flight

	adm admission // as the leader with the segment Raft log: idempotent batches in flight

	mu       sync.Mutex
	waitCh   chan struct{} // closed and dropped at the next advance; nil when nobody waits
	closed   bool          // the Manager dropped this partition
	deleting bool          // the state machine deletes the log instead of closing it
	smClosed chan struct{} // closed once the open state machine has closed its log; nil if none opened
}

func newPartition(host *quorum.Host, topic string, partition int32, shardID uint64, dir string, cfg TopicConfig, logger *slog.Logger) *Partition {
	p := &Partition{
		topic:     topic,
		partition: partition,
		shardID:   shardID,
		dir:       dir,
		host:      host,
		logger:    logger.With("topic", topic, "partition", partition, "shard", shardID),
	}
	p.config.Store(&cfg)
	return p
}

// Topic is the partition's topic.
func (p *Partition) Topic() string { return p.topic }

// Index is the partition number within its topic.
func (p *Partition) Index() int32 { return p.partition }

// ShardID is the partition's Raft group.
func (p *Partition) ShardID() uint64 { return p.shardID }

// Started is when this broker started its replica (its Raft group running here; it may still be
// catching up).
func (p *Partition) Started() time.Time { return p.started }

func (p *Partition) options() *TopicConfig { return p.config.Load() }

// createStateMachine is the factory handed to dragonboat for this partition.
func (p *Partition) createStateMachine(shardID, replicaID uint64) sm.IOnDiskStateMachine {
	return &stateMachine{p: p}
}

// attach publishes an opened log to readers. The state machine closes the
// returned channel once it has closed the log.
// next is the offset after the applied batches: the high watermark.
func (p *Partition) attach(log *segment.Log, producers *producerState, next int64) (closed chan struct{}) {
	closed = make(chan struct{})
	p.mu.Lock()
	p.smClosed = closed
	p.mu.Unlock()
	// A new state machine's producer state: what was in flight was checked against the old one.
	p.adm.mu.Lock()
	p.resetAdmission(p.txns.Load(), 0)
	p.adm.mu.Unlock()
	producers.mu.Lock()
	p.lso.Store(producers.stableBefore(next))
	producers.mu.Unlock()
	p.txns.Store(producers)
	p.hw.Store(next)
	p.log.Store(log)
	return closed
}

// logClosed returns a channel closed once the state machine that last opened
// the log has closed it (nil if none ever opened).
func (p *Partition) logClosed() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.smClosed
}

// detach hides the log from readers before it closes and wakes all waiters.
// It reports whether the log is to be deleted rather than closed.
func (p *Partition) detach(log *segment.Log) (deleting bool) {
	p.log.CompareAndSwap(log, nil)
	p.mu.Lock()
	ch := p.waitCh
	p.waitCh = nil
	deleting = p.deleting
	p.mu.Unlock()
	if ch != nil {
		close(ch)
	}
	return deleting
}

// advance publishes a new high watermark and wakes waiters.
func (p *Partition) advance(hw int64) {
	p.hw.Store(hw)
	p.mu.Lock()
	ch := p.waitCh
	p.waitCh = nil
	p.mu.Unlock()
	if ch != nil {
		close(ch)
	}
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Wait returns a channel closed once HighWatermark() > offset, or when the
// partition's log closes. All waiters share one channel per append.
func (p *Partition) Wait(offset int64) <-chan struct{} {
	if p.hw.Load() > offset {
		return closedChan
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.log.Load() == nil || p.hw.Load() > offset {
		return closedChan
	}
	if p.waitCh == nil {
		p.waitCh = make(chan struct{})
	}
	return p.waitCh
}

// WaitStable is Wait for read_committed readers: the channel closes once
// LastStableOffset() > offset (or the log closes). An append that leaves the
// last stable offset where it was closes it too; the caller checks again.
func (p *Partition) WaitStable(offset int64) <-chan struct{} {
	if p.lso.Load() > offset {
		return closedChan
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.log.Load() == nil || p.lso.Load() > offset {
		return closedChan
	}
	if p.waitCh == nil {
		p.waitCh = make(chan struct{})
	}
	return p.waitCh
}

// HighWatermark is the offset after the last applied, hence committed, batch.
func (p *Partition) HighWatermark() int64 { return p.hw.Load() }

// LastStableOffset is the offset below which every transaction has ended:
// the first offset of the oldest open transaction, else the high watermark.
// read_committed consumers read below it.
func (p *Partition) LastStableOffset() int64 { return min(p.lso.Load(), p.hw.Load()) }

// AbortedTxns appends to dst the aborted transactions with data in
// [from, to), oldest marker first (the Fetch response's list).
func (p *Partition) AbortedTxns(dst []AbortedTxn, from, to int64) []AbortedTxn {
	ps := p.txns.Load()
	if ps == nil {
		return dst
	}
	return ps.abortedIn(dst, from, to)
}

// Producers describes the producers this partition knows (DescribeProducers).
func (p *Partition) Producers() []ProducerInfo {
	ps := p.txns.Load()
	if ps == nil {
		return nil
	}
	return ps.describe()
}

// LogStartOffset is the first offset still in the log for clients: retention moves it, and so
// does DeleteRecords (a floor kept in the cluster metadata, SetStartFloor).
func (p *Partition) LogStartOffset() int64 {
	if log := p.log.Load(); log != nil {
		return max(log.StartOffset(), p.startFloor.Load())
	}
	return 0
}

// SetStartFloor raises the log start offset to floor (DeleteRecords), never lowering it.
func (p *Partition) SetStartFloor(floor int64) {
	for {
		cur := p.startFloor.Load()
		if floor <= cur || p.startFloor.CompareAndSwap(cur, floor) {
			return
		}
	}
}

// Size is the number of bytes of batches the log holds (DescribeLogDirs).
func (p *Partition) Size() int64 {
	if log := p.log.Load(); log != nil {
		return log.Size()
	}
	return 0
}

// MinInSyncReplicas is the topic's min.insync.replicas (1 by default).
func (p *Partition) MinInSyncReplicas() int { return p.options().MinInSyncReplicas }

// MaxMessageBytes is the topic's max.message.bytes, else the broker default.
func (p *Partition) MaxMessageBytes() int32 { return p.options().MaxMessageBytes }

// Compression is the topic's compression.type as a codec, or CompressionProducer.
func (p *Partition) Compression() int8 { return p.options().Compression }

// Leader reports whether this node leads the partition's Raft group, the
// leader's broker id (-1 if unknown) and the Raft term as the leader epoch.
func (p *Partition) Leader() (isLeader bool, leaderID int32, epoch int32) {
	id, term, ok := p.host.LeaderInfo(p.shardID)
	if !ok {
		return false, -1, int32(term)
	}
	return id == p.host.NodeID(), int32(id), int32(term)
}

// Read returns committed batches from offset, up to about maxBytes (at least
// one whole batch). Offsets outside [LogStartOffset, HighWatermark] give
// kerr.OffsetOutOfRange (kerr.NotLeaderForPartition while a restart replays
// them); offset == HighWatermark gives an empty result. Release every result
// when its ranges have been sent.
func (p *Partition) Read(offset int64, maxBytes int) (*segment.ReadResult, error) {
	return p.read(offset, maxBytes, false)
}

// ReadCommitted is Read for read_committed consumers: batches stop at the last
// stable offset; an offset between it and the high watermark reads nothing.
func (p *Partition) ReadCommitted(offset int64, maxBytes int) (*segment.ReadResult, error) {
	return p.read(offset, maxBytes, true)
}

// ReadOffsetError is why a consumer cannot read from offset now, or nil: kerr.OffsetOutOfRange below
// logStart (the LogStartOffset the caller read) or above the high watermark, except above it while a
// restart still replays the log up to offset: kerr.NotLeaderForPartition, retriable (the records are
// there, the high watermark is not yet).
func (p *Partition) ReadOffsetError(offset, logStart int64) error {
	return p.readOffsetError(offset, logStart, p.hw.Load())
}

func (p *Partition) readOffsetError(offset, logStart, hw int64) error {
	switch {
	case offset < logStart:
		return kerr.OffsetOutOfRange
	case offset > hw && offset <= p.replayTo.Load():
		return kerr.NotLeaderForPartition
	case offset > hw:
		return kerr.OffsetOutOfRange
	}
	return nil
}

func (p *Partition) read(offset int64, maxBytes int, committed bool) (*segment.ReadResult, error) {
	log := p.log.Load()
	if log == nil {
		return nil, kerr.NotLeaderForPartition
	}
	end := p.lso.Load() // read before hw: the state machine stores it first, so it is never past hw
	hw := p.hw.Load()
	if !committed {
		end = hw
	}
	// Below the DeleteRecords floor here; below the files' own start, the segment answers.
	if err := p.readOffsetError(offset, p.startFloor.Load(), hw); err != nil {
		return nil, err
	}
	// Bounded by the watermark just read: the state machine appends a whole Raft batch before it
	// advances the watermark, and a consumer handed batches past it would next fetch above it.
	r, err := log.ReadBelow(offset, maxBytes, min(end, hw))
	if err != nil {
		return nil, KafkaError(err)
	}
	return r, nil
}

// OffsetForTimestamp answers ListOffsets by timestamp at record granularity, as Kafka does: the
// first committed record whose timestamp is >= ts, not below the log start offset. The time index
// finds its batch, and only that batch is read (and decompressed) to find the record. found is
// false when no committed record reaches ts.
func (p *Partition) OffsetForTimestamp(ts int64) (offset int64, timestamp int64, found bool, err error) {
	log := p.log.Load()
	if log == nil {
		return 0, -1, false, kerr.NotLeaderForPartition
	}
	off, found, err := log.OffsetForTimestamp(ts)
	if err != nil || !found || off >= p.hw.Load() { // the log may hold uncommitted batches
		return -1, -1, false, KafkaError(err)
	}
	// Below a DeleteRecords floor: the answer starts at the floor (its batch may start before it).
	off = max(off, p.startFloor.Load())
	r, err := log.Read(off, 1) // at least, and here exactly, the one batch
	if err != nil {
		return -1, -1, false, KafkaError(err)
	}
	b, err := r.AppendTo(nil)
	r.Release()
	if err != nil {
		return -1, -1, false, KafkaError(err)
	}
	h, err := segment.ParseHeader(b)
	if err != nil {
		return -1, -1, false, KafkaError(err)
	}
	recOff, recTs, ok, err := firstRecordAtOrAfter(b[:min(h.Size(), len(b))], ts)
	if err != nil || !ok {
		// The batch's max timestamp reaches ts, so a record must; if the records disagree, the batch
		// is the honest answer.
		return off, h.MaxTimestamp, true, nil
	}
	return max(recOff, p.LogStartOffset()), recTs, true, nil
}

// Produce replicates one validated batch and returns once it is committed and
// applied. A repeat of one of the producer's last 5 batches succeeds with the
// original base offset and is not appended again.
func (p *Partition) Produce(ctx context.Context, batch []byte) (ProduceResult, error) {
	timeout := defaultProduceTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
		if timeout <= 0 {
			return ProduceResult{}, kerr.RequestTimedOut
		}
	}
	type outcome struct {
		r   ProduceResult
		err error
	}
	ch := make(chan outcome, 1)
	p.ProduceAsync(batch, timeout, func(r ProduceResult, err error) { ch <- outcome{r, err} })
	select {
	case o := <-ch:
		return o.r, o.err
	case <-ctx.Done():
		return ProduceResult{}, kerr.RequestTimedOut
	}
}

// ProduceAsync is Produce without blocking: done is called exactly once, from
// another goroutine, and should return quickly (completions of a partition are
// delivered in order by one goroutine). batch may be reused once ProduceAsync
// returns.
func (p *Partition) ProduceAsync(batch []byte, timeout time.Duration, done func(ProduceResult, error)) {
	p.propose(batch, timeout, done)
}

// propose admits batch and proposes it. Offsets are fixed when Raft stores the entry, so
// idempotent batches are admitted (duplicates answered, gaps refused) before they are proposed.
func (p *Partition) propose(batch []byte, timeout time.Duration, done func(ProduceResult, error)) {
	id, term, ok := p.host.LeaderInfo(p.shardID)
	if !ok || id != p.host.NodeID() {
		go done(ProduceResult{}, kerr.NotLeaderForPartition)
		return
	}
	cmd := raftlog.Command{Epoch: int32(term), AppendTime: time.Now().UnixMilli()}
	if p.options().LogAppendTime {
		cmd.Flags |= flagLogAppendTime
	}
	h, err := segment.ParseHeader(batch)
	if err != nil {
		go done(ProduceResult{}, kerr.CorruptMessage)
		return
	}
	a := &p.adm
	a.mu.Lock()
	defer a.mu.Unlock()
	ps := p.txns.Load()
	if ps == nil {
		go done(ProduceResult{}, kerr.NotLeaderForPartition) // not open yet
		return
	}
	if cmd.Epoch != a.term {
		p.resetAdmission(ps, cmd.Epoch)
	}
	if h.ProducerID < 0 {
		a.proposal++
		cmd.Proposal = a.proposal
		p.proposeCommand(batch, cmd, timeout, done)
		return
	}
	if !a.ready || len(a.parked) > 0 {
		// A new leader first applies every entry of earlier terms: until then its producer state
		// may lack batches already in the log. The batch waits (copied: the caller reuses it),
		// in order with the others, for the check running in the background.
		// A parked batch is answered (retriable) rather than proposed once it has waited maxPark:
		// proposed later, it could land after its producer gave up on the request and moved on.
		wait := min(timeout, maxPark)
		a.parked = append(a.parked, parkedProduce{batch: append([]byte(nil), batch...), h: h, cmd: cmd,
			deadline: time.Now().Add(wait), done: done})
		time.AfterFunc(wait, p.expireParked)
		p.checkReady(cmd.Epoch)
		return
	}
	p.admitAndPropose(ps, batch, h, cmd, timeout, done)
}

// admitAndPropose admits an idempotent batch and proposes it. Callers hold p.adm.mu.
func (p *Partition) admitAndPropose(ps *producerState, batch []byte, h segment.Header, cmd raftlog.Command, timeout time.Duration, done func(ProduceResult, error)) {
	a := &p.adm
	a.proposal++
	cmd.Proposal = a.proposal
	ps.mu.Lock()
	saved, existed := inflightProducer{}, false
	if in := a.producers[h.ProducerID]; in != nil {
		saved, existed = *in, true
	}
	dupBase, dup, err := a.admit(ps, h, batch, cmd.Proposal)
	if err != nil && err != kerr.RequestTimedOut {
		ae, al, ie, il, n := a.describe(ps, h.ProducerID)
		p.logger.Info("idempotent batch refused", "err", err, "producer", h.ProducerID, "epoch", h.ProducerEpoch,
			"first_seq", h.BaseSequence, "records", h.LastOffsetDelta+1, "term", a.term,
			"applied_epoch", ae, "applied_last_seq", al, "inflight_epoch", ie, "inflight_last_seq", il, "inflight", n, "hw", p.hw.Load())
	}
	ps.mu.Unlock()
	switch {
	case err != nil:
		go done(ProduceResult{}, err)
		return
	case dup:
		go done(ProduceResult{BaseOffset: dupBase, LogAppendTime: -1, LogStartOffset: p.LogStartOffset()}, nil)
		return
	}
	if !p.proposeCall(batch, cmd, true, timeout, done) {
		ps.mu.Lock()
		a.undo(h.ProducerID, saved, existed)
		ps.mu.Unlock()
	}
}

// resetAdmission starts a new term's admission state; batches parked for the old term are
// answered NOT_LEADER (the producer retries on the new leader). Callers hold p.adm.mu.
func (p *Partition) resetAdmission(ps *producerState, term int32) {
	a := &p.adm
	for _, pp := range a.parked {
		go pp.done(ProduceResult{}, kerr.NotLeaderForPartition)
	}
	clear(a.parked)
	a.parked = a.parked[:0]
	if ps != nil {
		ps.mu.Lock()
		defer ps.mu.Unlock()
	}
	a.reset(term)
}

// drainParked proposes the batches parked while the leader was not ready, in arrival order.
// Callers hold p.adm.mu.
func (p *Partition) drainParked() {
	a := &p.adm
	ps := p.txns.Load()
	parked := a.parked
	a.parked = nil
	for _, pp := range parked {
		left := time.Until(pp.deadline)
		if ps == nil || left <= 0 {
			go pp.done(ProduceResult{}, kerr.RequestTimedOut)
			continue
		}
		p.admitAndPropose(ps, pp.batch, pp.h, pp.cmd, left, pp.done)
	}
}

// maxPark bounds how long an idempotent batch waits for its leader to be ready.
const maxPark = time.Second

// expireParked answers the parked batches whose time is up with REQUEST_TIMED_OUT (retriable).
func (p *Partition) expireParked() {
	a := &p.adm
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	kept := a.parked[:0]
	for _, pp := range a.parked {
		if now.Before(pp.deadline) {
			kept = append(kept, pp)
		} else {
			go pp.done(ProduceResult{}, kerr.RequestTimedOut)
		}
	}
	clear(a.parked[len(kept):])
	a.parked = kept
}

// parkedProduce is an idempotent produce waiting for a new leader to be ready.
type parkedProduce struct {
	batch    []byte
	h        segment.Header
	cmd      raftlog.Command
	deadline time.Time
	done     func(ProduceResult, error)
}

// proposeCommand proposes batch under cmd's header; done is called once with the outcome. It
// reports whether the command reached Raft (false: done already has the error).
func (p *Partition) proposeCommand(batch []byte, cmd raftlog.Command, timeout time.Duration, done func(ProduceResult, error)) bool {
	return p.proposeCall(batch, cmd, false, timeout, done)
}

// proposeCall is proposeCommand that says whether the batch was admitted (admission.go).
func (p *Partition) proposeCall(batch []byte, cmd raftlog.Command, admitted bool, timeout time.Duration, done func(ProduceResult, error)) bool {
	c := produceCalls.Get().(*produceCall)
	c.p, c.done, c.admitted, c.term = p, done, admitted, cmd.Epoch
	c.appendTime, c.logAppendTime = cmd.AppendTime, cmd.Flags&flagLogAppendTime != 0
	c.proposed = metrics.Now()
	// The command buffer is reused: quorum (dragonboat) copies the command
	// before ProposeAsync returns.
	buf := cmdBufs.Get().(*[]byte)
	*buf = raftlog.AppendCommand((*buf)[:0], cmd, batch)
	err := p.host.ProposeAsync(p.shardID, *buf, timeout, c.complete)
	if cap(*buf) <= maxPooledCmd {
		cmdBufs.Put(buf)
	}
	if err != nil {
		c.release()
		go done(ProduceResult{}, proposeError(err))
		return false
	}
	return true
}

// checkReady makes the leader ready for idempotent batches: it proposes a barrier and, once that
// has applied, drains the parked batches (barrierDone). Callers hold p.adm.mu.
func (p *Partition) checkReady(term int32) {
	a := &p.adm
	if a.ready || a.barrier != 0 || a.transferring || a.term != term {
		return
	}
	a.proposal++
	n := a.proposal
	cmd := raftlog.AppendCommand(nil, raftlog.Command{Kind: raftlog.KindBarrier, Epoch: term, AppendTime: time.Now().UnixMilli(), Proposal: n}, nil)
	err := p.host.ProposeAsync(p.shardID, cmd, readyTimeout, func(_ sm.Result, err error) { p.barrierDone(term, n, err) })
	if err != nil {
		p.retryReady(term)
		return
	}
	a.barrier = n
}

// barrierDone ends a barrier: ready, or another try while this node leads the same term (the
// parked batches wait, up to their deadlines).
func (p *Partition) barrierDone(term int32, n uint64, err error) {
	a := &p.adm
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.term != term || a.barrier != n {
		return
	}
	a.barrier = 0
	if err == nil {
		if a.transferring {
			return // proposed before a transfer began: the transfer's own wait re-checks
		}
		a.ready = true
		p.drainParked()
		return
	}
	p.logger.Debug("leader not ready for idempotent writes yet", "term", term, "err", err)
	p.retryReady(term) // the parked batches wait, each up to its deadline (expireParked)
}

// retryReady tries the barrier again shortly, if this node still leads the term by then.
func (p *Partition) retryReady(term int32) {
	time.AfterFunc(readyRetry, func() {
		a := &p.adm
		a.mu.Lock()
		defer a.mu.Unlock()
		if id, t, ok := p.host.LeaderInfo(p.shardID); ok && id == p.host.NodeID() && int32(t) == term {
			p.checkReady(term)
		}
	})
}

// readyRetry spaces barrier attempts.
const readyRetry = 20 * time.Millisecond

// admittedDropped is told that an admitted batch of term came back NOT_LEADER: Raft may have
// dropped it (a leadership transfer) while this node still leads, and later proposals may land.
// The in-flight state is exact again only after a barrier.
func (p *Partition) admittedDropped(term int32) {
	a := &p.adm
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.term == term && a.ready {
		a.ready = false
		p.checkReady(term)
	}
}

// transferring fences idempotent writes while this node hands leadership away (TransferLeader):
// until the term changes, or, if it has not after transferWait, until a barrier.
func (p *Partition) transferring() {
	id, term, ok := p.host.LeaderInfo(p.shardID)
	if !ok || id != p.host.NodeID() {
		return
	}
	a := &p.adm
	a.mu.Lock()
	if int32(term) != a.term {
		p.resetAdmission(p.txns.Load(), int32(term))
	}
	a.ready, a.transferring = false, true
	a.mu.Unlock()
	time.AfterFunc(transferWait, func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.term == int32(term) && a.transferring {
			a.transferring = false
			p.checkReady(int32(term))
		}
	})
}

// transferWait is how long a leadership transfer is given before this node, still leading the
// same term, takes idempotent writes again (dragonboat aborts a transfer after an election timeout).
const transferWait = time.Second

// readyTimeout bounds one barrier.
const readyTimeout = 5 * time.Second

// prepareWrites starts the readiness check of a new leadership term ahead of the first
// idempotent produce (the lag loop calls it for the partitions this node leads).
func (p *Partition) prepareWrites() {
	if p.host.RaftLog() == nil {
		return
	}
	id, term, ok := p.host.LeaderInfo(p.shardID)
	if !ok || id != p.host.NodeID() {
		return
	}
	ps := p.txns.Load()
	if ps == nil {
		return
	}
	a := &p.adm
	a.mu.Lock()
	defer a.mu.Unlock()
	if int32(term) != a.term {
		p.resetAdmission(ps, int32(term))
	}
	p.checkReady(int32(term))
}

// applied is called by the state machine for each batch it applies (under no lock): this
// leader's proposals up to it are no longer in flight.
func (p *Partition) applied(c raftlog.Command) {
	ps := p.txns.Load()
	if ps == nil {
		return
	}
	ps.mu.Lock()
	p.adm.retire(c)
	ps.mu.Unlock()
}

// maxPooledCmd keeps rare huge commands out of the buffer pool.
const maxPooledCmd = 1<<20 + 4<<10

var cmdBufs = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// produceCall is one ProduceAsync in flight, pooled with its completion
// function bound once, so proposing allocates nothing of its own.
type produceCall struct {
	p             *Partition
	done          func(ProduceResult, error)
	appendTime    int64
	logAppendTime bool
	admitted      bool  // an idempotent batch admitted in term (admission.go)
	term          int32 // the term it was proposed in
	proposed      metrics.Mono
	complete      func(sm.Result, error)
}

var produceCalls sync.Pool

func init() {
	// Set here, not in the declaration: finish puts calls back in the pool.
	produceCalls.New = func() any {
		c := new(produceCall)
		c.complete = c.finish
		return c
	}
}

func (c *produceCall) release() {
	c.p, c.done, c.admitted = nil, nil, false
	produceCalls.Put(c)
}

func (c *produceCall) finish(r sm.Result, err error) {
	p, done, appendTime, logAppendTime, admitted, term := c.p, c.done, c.appendTime, c.logAppendTime, c.admitted, c.term
	proposed := c.proposed
	c.release()
	if err != nil {
		if admitted && errors.Is(err, quorum.ErrNotLeader) {
			p.admittedDropped(term)
		}
		done(ProduceResult{}, proposeError(err))
		return
	}
	metrics.RaftCommitSeconds.Observe(proposed.Seconds())
	base, dup, err := decodeResult(r.Value)
	if err != nil {
		done(ProduceResult{}, err)
		return
	}
	res := ProduceResult{BaseOffset: base, LogAppendTime: -1, LogStartOffset: p.LogStartOffset()}
	if logAppendTime && !dup {
		res.LogAppendTime = appendTime
	}
	done(res, nil)
}

// setConfig applies changed topic configs; the log takes new segment options
// at once (retention, rolling), the rest applies to the next produce.
func (p *Partition) setConfig(tc TopicConfig) {
	old := p.config.Swap(&tc)
	if old != nil && *old == tc {
		return
	}
	if log := p.log.Load(); log != nil {
		log.SetOptions(tc.Log)
	}
}

func (p *Partition) enforceRetention(now time.Time) (int, error) {
	log := p.log.Load()
	if log == nil {
		return 0, nil
	}
	// DeleteRecords moved the log start offset: whole segments below it go too.
	deleted := min(p.startFloor.Load(), p.hw.Load())
	if store := p.host.RaftLog(); store != nil {
		// Never below what Raft may still read back (uncompacted entries), nor the high watermark.
		rl, err := store.Partition(p.shardID, p.host.NodeID())
		if err != nil {
			return 0, err
		}
		if target := min(max(log.RetentionTarget(now), deleted), p.hw.Load()); target > rl.RetentionFloor() {
			// Raft still holds entries whose batches are due: compact it to what is applied.
			if err := p.host.CompactLog(p.shardID, compactTimeout); err != nil {
				return 0, fmt.Errorf("replica: compact the raft log of %s-%d for retention: %w", p.topic, p.partition, err)
			}
			// dragonboat drops the entries just after the snapshot, on its own goroutine.
			for deadline := time.Now().Add(compactTimeout); rl.RetentionFloor() < target && time.Now().Before(deadline); {
				time.Sleep(10 * time.Millisecond)
			}
		}
		floor := min(rl.RetentionFloor(), p.hw.Load())
		n, err := log.EnforceRetentionBelow(now, floor)
		if err != nil {
			return n, err
		}
		m, err := log.DeleteBefore(deleted, floor)
		return n + m, err
	}
	n, err := log.EnforceRetention(now)
	if err != nil {
		return n, err
	}
	m, err := log.DeleteBefore(deleted, p.hw.Load())
	return n + m, err
}

// compactTimeout bounds the Raft log compaction retention asks for.
const compactTimeout = 10 * time.Second

// markDeleting makes the state machine delete the log when it closes.
func (p *Partition) markDeleting() {
	p.mu.Lock()
	p.deleting = true
	p.mu.Unlock()
	p.markClosed()
}

// markClosed ends the partition for waiters: Wait returns closed channels.
func (p *Partition) markClosed() {
	p.mu.Lock()
	p.closed = true
	ch := p.waitCh
	p.waitCh = nil
	p.mu.Unlock()
	if ch != nil {
		close(ch)
	}
}

// waitLogClosed waits, up to d, for an opened log to be closed.
func (p *Partition) waitLogClosed(d time.Duration) {
	ch := p.logClosed()
	if ch == nil {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
		p.logger.Warn("state machine did not close its log in time")
	}
}

// WriteMarker ends producer pid's transaction in this partition: it writes a
// commit or abort control batch through Raft at the given producer epoch and
// returns the marker's offset once applied. A marker for a producer with no
// open transaction here is written and changes nothing but the epoch.
func (p *Partition) WriteMarker(ctx context.Context, pid int64, epoch int16, coordinatorEpoch int32, commit bool) (int64, error) {
	timeout := defaultProduceTimeout
	if dl, ok := ctx.Deadline(); ok {
		if timeout = time.Until(dl); timeout <= 0 {
			return 0, kerr.RequestTimedOut
		}
	}
	type outcome struct {
		r   ProduceResult
		err error
	}
	ch := make(chan outcome, 1)
	p.propose(batch.Marker(pid, epoch, coordinatorEpoch, commit, time.Now().UnixMilli()), timeout, func(r ProduceResult, err error) { ch <- outcome{r, err} })
	select {
	case o := <-ch:
		return o.r.BaseOffset, o.err
	case <-ctx.Done():
		return 0, kerr.RequestTimedOut
	}
}
