// Package txn is the transaction coordinator: the state machine of each transactional id (Empty,
// Ongoing, PrepareCommit, PrepareAbort, CompleteCommit, CompleteAbort), its producer id and epoch
// (fencing older instances), the partitions of its open transaction, ending transactions by writing
// markers, and aborting transactions that exceed their timeout. State is written to
// __transaction_state through a Store, in Kafka's TransactionLog record format, and rebuilt with
// Replay when this node takes over a partition of it. It knows nothing of sockets or Raft.
package txn

import (
	"context"
	"errors"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Kafka's transaction states (the TransactionLog value's State).
const (
	Empty          = kmsg.TransactionStateEmpty
	Ongoing        = kmsg.TransactionStateOngoing
	PrepareCommit  = kmsg.TransactionStatePrepareCommit
	PrepareAbort   = kmsg.TransactionStatePrepareAbort
	CompleteCommit = kmsg.TransactionStateCompleteCommit
	CompleteAbort  = kmsg.TransactionStateCompleteAbort
	Dead           = kmsg.TransactionStateDead
)

// TopicPartition names one partition.
type TopicPartition struct {
	Topic     string
	Partition int32
}

// Store writes records durably to the transactional id's partition of __transaction_state,
// returning once they are committed (errors are kerr errors such as NOT_COORDINATOR).
type Store interface {
	Append(ctx context.Context, txnID string, recs []Record) error
}

// Markers writes the commit or abort marker of producer pid at epoch into every partition of parts
// (locally or through the partitions' leaders). It returns nil once every marker is written; on
// error the coordinator retries later.
type Markers interface {
	WriteMarkers(ctx context.Context, txnID string, pid int64, epoch int16, commit bool, parts []TopicPartition) error
}

// Config tunes the coordinator; zero values take Kafka's defaults.
type Config struct {
	// MaxTimeout is transaction.max.timeout.ms (15 min).
	MaxTimeout time.Duration
	// Tick is how often timed-out transactions are aborted and unfinished ends retried (Kafka's
	// transaction.abort.timed.out.transaction.cleanup.interval.ms, 10 s; 500 ms here).
	Tick time.Duration
	// IDExpiration is transactional.id.expiration.ms (7 days): an id with no transaction open and
	// no request for this long is forgotten (a tombstone in __transaction_state).
	IDExpiration time.Duration
	// AllocateID hands out a new producer id.
	AllocateID func(ctx context.Context) (int64, error)
	// Logf, if set, reports background failures.
	Logf func(format string, args ...any)
}

type txn struct {
	id         string
	pid        int64
	epoch      int16
	timeoutMs  int32
	state      kmsg.TransactionState
	parts      map[TopicPartition]struct{}
	start      time.Time // the open transaction's start
	lastUpdate time.Time
	busy       bool // a transition is being written: other requests get CONCURRENT_TRANSACTIONS
}

func (t *txn) clone() *txn {
	c := *t
	c.parts = make(map[TopicPartition]struct{}, len(t.parts))
	for tp := range t.parts {
		c.parts[tp] = struct{}{}
	}
	return &c
}

// Coordinator holds every transactional id of the __transaction_state partitions this node leads.
type Coordinator struct {
	cfg     Config
	store   Store
	markers Markers

	mu   sync.Mutex
	txns map[string]*txn

	stop      chan struct{}
	closeOnce sync.Once
	done      chan struct{}
}

// New starts a coordinator; Close stops its timer goroutine.
func New(cfg Config, store Store, markers Markers) *Coordinator {
	if cfg.MaxTimeout <= 0 {
		cfg.MaxTimeout = 15 * time.Minute
	}
	if cfg.Tick <= 0 {
		cfg.Tick = 500 * time.Millisecond
	}
	if cfg.IDExpiration <= 0 {
		cfg.IDExpiration = 7 * 24 * time.Hour
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	c := &Coordinator{cfg: cfg, store: store, markers: markers, txns: map[string]*txn{}, stop: make(chan struct{}), done: make(chan struct{})}
	go c.timers()
	return c
}

// Close stops the timers; it may be called more than once.
func (c *Coordinator) Close() {
	c.closeOnce.Do(func() { close(c.stop) })
	<-c.done
}

// errCode is the Kafka code of err (UNKNOWN_SERVER_ERROR for non-Kafka errors; timeouts as
// REQUEST_TIMED_OUT... which clients of these APIs retry as COORDINATOR_NOT_AVAILABLE would be).
func errCode(err error) int16 {
	var ke *kerr.Error
	if errors.As(err, &ke) {
		return ke.Code
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return kerr.CoordinatorNotAvailable.Code
	}
	return kerr.UnknownServerError.Code
}

// acquire marks id's transaction busy and returns a copy to modify, or an error code. A nil txn with
// code 0 means the id is unknown (and is then reserved busy under a placeholder).
func (c *Coordinator) acquire(id string) (*txn, int16) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.txns[id]
	if t == nil {
		c.txns[id] = &txn{id: id, pid: -1, epoch: -1, state: Dead, busy: true, parts: map[TopicPartition]struct{}{}}
		return nil, 0
	}
	if t.busy {
		return nil, kerr.ConcurrentTransactions.Code
	}
	t.busy = true
	return t.clone(), 0
}

// release publishes next (nil: keep the stored state) and clears busy.
func (c *Coordinator) release(id string, next *txn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.txns[id]
	if t == nil {
		return // unloaded meanwhile
	}
	if next != nil {
		next.busy = false
		c.txns[id] = next
		return
	}
	if t.state == Dead && t.pid < 0 {
		delete(c.txns, id) // the placeholder of an id never written
		return
	}
	t.busy = false
}

// write persists t's state.
func (c *Coordinator) write(ctx context.Context, t *txn) error {
	t.lastUpdate = time.Now()
	return c.store.Append(ctx, t.id, []Record{encodeRecord(t)})
}

// InitProducerID gives the transactional id's producer its id and a new epoch, fencing the previous
// instance: an open transaction of it is aborted first and one being ended is completed. reqPID and
// reqEpoch are KIP-360's (-1 for a fresh producer).
func (c *Coordinator) InitProducerID(ctx context.Context, id string, timeoutMs int32, reqPID int64, reqEpoch int16) (int64, int16, int16) {
	if timeoutMs <= 0 || time.Duration(timeoutMs)*time.Millisecond > c.cfg.MaxTimeout {
		return -1, -1, kerr.InvalidTransactionTimeout.Code
	}
	t, code := c.acquire(id)
	if code != 0 {
		return -1, -1, code
	}
	var next *txn
	defer func() { c.release(id, next) }()
	if t == nil {
		if reqPID >= 0 {
			return -1, -1, kerr.InvalidProducerIDMapping.Code
		}
		pid, err := c.cfg.AllocateID(ctx)
		if err != nil {
			return -1, -1, kerr.CoordinatorNotAvailable.Code
		}
		t = &txn{id: id, pid: pid, epoch: -1, parts: map[TopicPartition]struct{}{}}
	} else if reqPID >= 0 && (reqPID != t.pid || reqEpoch != t.epoch) {
		return -1, -1, kerr.ProducerFenced.Code
	}
	// next is the last persisted state: what stands if a later write fails.
	switch t.state {
	case Ongoing:
		// Fence the old instance: its transaction ends aborted at a new epoch.
		prevEpoch := t.epoch
		if t.epoch < math.MaxInt16-1 {
			t.epoch++
		}
		err := c.end(ctx, t, false)
		if t.state != Ongoing {
			next = t.clone()
		} else {
			t.epoch = prevEpoch
		}
		if err != nil {
			return -1, -1, errCode(err)
		}
	case PrepareCommit, PrepareAbort:
		if err := c.complete(ctx, t); err != nil {
			return -1, -1, errCode(err)
		}
		next = t.clone()
	}
	if t.epoch >= math.MaxInt16-1 {
		pid, err := c.cfg.AllocateID(ctx)
		if err != nil {
			return -1, -1, kerr.CoordinatorNotAvailable.Code
		}
		t.pid, t.epoch = pid, -1
	}
	t.epoch++
	t.timeoutMs, t.state, t.start = timeoutMs, Empty, time.Time{}
	clear(t.parts)
	if err := c.write(ctx, t); err != nil {
		return -1, -1, errCode(err)
	}
	next = t
	return t.pid, t.epoch, 0
}

// checkProducer validates a request's producer against the id's state.
func checkProducer(t *txn, pid int64, epoch int16) int16 {
	switch {
	case t == nil || t.pid != pid:
		return kerr.InvalidProducerIDMapping.Code
	case epoch != t.epoch:
		return kerr.ProducerFenced.Code
	case t.state == PrepareCommit || t.state == PrepareAbort:
		return kerr.ConcurrentTransactions.Code
	}
	return 0
}

// AddPartitions adds partitions to the producer's transaction, opening it if needed.
func (c *Coordinator) AddPartitions(ctx context.Context, id string, pid int64, epoch int16, parts []TopicPartition) int16 {
	t, code := c.acquire(id)
	if code != 0 {
		return code
	}
	var next *txn
	defer func() { c.release(id, next) }()
	if code := checkProducer(t, pid, epoch); code != 0 {
		return code
	}
	if t.state == Ongoing {
		all := true
		for _, tp := range parts {
			_, ok := t.parts[tp]
			all = all && ok
		}
		if all {
			return 0
		}
	} else {
		clear(t.parts)
		t.start = time.Now()
	}
	for _, tp := range parts {
		t.parts[tp] = struct{}{}
	}
	t.state = Ongoing
	if err := c.write(ctx, t); err != nil {
		return errCode(err)
	}
	next = t
	return 0
}

// Verify reports whether every partition is in the producer's open transaction (AddPartitionsToTxn
// v4+ VerifyOnly).
func (c *Coordinator) Verify(id string, pid int64, epoch int16, parts []TopicPartition) int16 {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.txns[id]
	if t != nil && t.busy && t.pid < 0 {
		t = nil
	}
	if code := checkProducer(t, pid, epoch); code != 0 {
		return code
	}
	if t.state != Ongoing {
		return kerr.InvalidTxnState.Code
	}
	for _, tp := range parts {
		if _, ok := t.parts[tp]; !ok {
			return kerr.InvalidTxnState.Code
		}
	}
	return 0
}

// VerifyProduce checks a transactional batch for partition tp against the id's state when this
// coordinator holds it (known false otherwise: the caller cannot tell and lets the batch through).
// A fenced epoch, or a partition not added to the open transaction, is refused.
func (c *Coordinator) VerifyProduce(id string, pid int64, epoch int16, tp TopicPartition) (code int16, known bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.txns[id]
	if t == nil || t.pid < 0 || t.pid != pid {
		return 0, false
	}
	switch {
	case epoch < t.epoch:
		return kerr.InvalidProducerEpoch.Code, true
	case epoch > t.epoch:
		return 0, false // a newer epoch than we know: not ours to judge
	case t.state != Ongoing:
		return kerr.InvalidTxnState.Code, true
	}
	if _, ok := t.parts[tp]; !ok {
		return kerr.InvalidTxnState.Code, true
	}
	return 0, true
}

// EndTxn commits or aborts the producer's transaction: the decision is persisted (Prepare*), the
// markers written, then the completion. A retry of a completed end succeeds.
func (c *Coordinator) EndTxn(ctx context.Context, id string, pid int64, epoch int16, commit bool) int16 {
	t, code := c.acquire(id)
	if code != 0 {
		return code
	}
	var next *txn
	defer func() { c.release(id, next) }()
	if t == nil || t.pid != pid {
		return kerr.InvalidProducerIDMapping.Code
	}
	if epoch != t.epoch {
		return kerr.ProducerFenced.Code
	}
	switch {
	case t.state == Ongoing:
	case t.state == CompleteCommit && commit, t.state == CompleteAbort && !commit:
		return 0 // a retry
	case t.state == PrepareCommit && commit, t.state == PrepareAbort && !commit:
		return kerr.ConcurrentTransactions.Code
	default:
		return kerr.InvalidTxnState.Code
	}
	err := c.end(ctx, t, commit)
	next = t
	if err != nil && t.state == Ongoing {
		return errCode(err) // the decision was not persisted: nothing happened
	}
	return 0 // decided: markers that failed are retried by the timers
}

// end persists the decision for t's open transaction and completes it. t's state says how far it
// got (Ongoing: nothing persisted; Prepare*: decided, markers pending).
func (c *Coordinator) end(ctx context.Context, t *txn, commit bool) error {
	prev := t.state
	t.state = PrepareAbort
	if commit {
		t.state = PrepareCommit
	}
	if err := c.write(ctx, t); err != nil {
		t.state = prev
		return err
	}
	return c.complete(ctx, t)
}

// complete writes the markers of a prepared transaction, then its completion.
func (c *Coordinator) complete(ctx context.Context, t *txn) error {
	commit := t.state == PrepareCommit
	if len(t.parts) > 0 {
		if err := c.markers.WriteMarkers(ctx, t.id, t.pid, t.epoch, commit, t.sortedParts()); err != nil {
			return err
		}
	}
	done := t.clone()
	done.state = CompleteAbort
	if commit {
		done.state = CompleteCommit
	}
	clear(done.parts)
	done.start = time.Time{}
	if err := c.write(ctx, done); err != nil {
		return err
	}
	*t = *done
	return nil
}

// timers aborts transactions past their timeout (bumping the epoch, which fences the producer as
// Kafka does) and finishes prepared transactions whose markers failed or were interrupted by a
// take-over.
func (c *Coordinator) timers() {
	defer close(c.done)
	tick := time.NewTicker(c.cfg.Tick)
	defer tick.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-tick.C:
		}
		now := time.Now()
		var due []string
		c.mu.Lock()
		for id, t := range c.txns {
			switch {
			case t.busy:
			case t.state == PrepareCommit || t.state == PrepareAbort:
				due = append(due, id)
			case t.state == Ongoing && now.Sub(t.start) > time.Duration(t.timeoutMs)*time.Millisecond:
				due = append(due, id)
			case t.state != Ongoing && t.pid >= 0 && now.Sub(t.lastUpdate) > c.cfg.IDExpiration:
				due = append(due, id)
			}
		}
		c.mu.Unlock()
		for _, id := range due {
			c.expire(id)
		}
	}
}

func (c *Coordinator) expire(id string) {
	t, code := c.acquire(id)
	if code != 0 || t == nil {
		c.release(id, nil)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var err error
	switch t.state {
	case Ongoing:
		if t.epoch < math.MaxInt16-1 {
			t.epoch++
		}
		err = c.end(ctx, t, false)
		if err != nil && t.state == Ongoing {
			c.release(id, nil)
			c.cfg.Logf("aborting timed-out transaction %q: %v", id, err)
			return
		}
	case PrepareCommit, PrepareAbort:
		err = c.complete(ctx, t)
	case Empty, CompleteCommit, CompleteAbort:
		if time.Since(t.lastUpdate) <= c.cfg.IDExpiration {
			c.release(id, nil)
			return
		}
		if err := c.store.Append(ctx, id, []Record{{Key: encodeRecord(t).Key}}); err != nil {
			c.release(id, nil)
			c.cfg.Logf("expiring transactional id %q: %v", id, err)
			return
		}
		c.mu.Lock()
		delete(c.txns, id)
		c.mu.Unlock()
		return
	default:
		c.release(id, nil)
		return
	}
	if err != nil {
		c.cfg.Logf("completing transaction %q: %v", id, err)
	}
	c.release(id, t)
}

// Unload forgets the ids for which drop is true (their partition is led elsewhere now or is about
// to be reloaded).
func (c *Coordinator) Unload(drop func(txnID string) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id := range c.txns {
		if drop(id) {
			delete(c.txns, id)
		}
	}
}

// Replay applies one record read back from __transaction_state.
func (c *Coordinator) Replay(r Record) { c.replay(r, func(string) bool { return true }) }

func (c *Coordinator) replay(r Record, inPartition func(txnID string) bool) {
	id, t, ok := decodeRecord(r)
	if !ok || !inPartition(id) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if t == nil {
		delete(c.txns, id)
		return
	}
	c.txns[id] = t
}

// Info is what DescribeTransactions and ListTransactions show of one transactional id.
type Info struct {
	ID        string
	PID       int64
	Epoch     int16
	TimeoutMs int32
	State     kmsg.TransactionState
	Start     time.Time // zero when no transaction is open
	Parts     []TopicPartition
}

// Describe returns id's state; ok is false when this coordinator does not know it.
func (c *Coordinator) Describe(id string) (Info, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.txns[id]
	if t == nil || t.pid < 0 {
		return Info{}, false
	}
	return t.info(), true
}

func (t *txn) info() Info {
	return Info{ID: t.id, PID: t.pid, Epoch: t.epoch, TimeoutMs: t.timeoutMs, State: t.state, Start: t.start, Parts: t.sortedParts()}
}

// List returns every known id, sorted.
func (c *Coordinator) List() []Info {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Info, 0, len(c.txns))
	for _, t := range c.txns {
		if t.pid >= 0 {
			out = append(out, t.info())
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}
