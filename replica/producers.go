package replica

import (
	"encoding/binary"
	"errors"
	"math"
	"slices"
	"sort"
	"sync"

	"github.com/twmb/franz-go/pkg/kerr"
)

// producerHistory is how many recent batches per producer are remembered for
// duplicate detection; Kafka clients keep at most 5 requests in flight.
const producerHistory = 5

// producerExpiry drops a producer that has not written for this long (Kafka's
// producer.id.expiration.ms default is one day; we are more generous). It is
// measured against append times carried in the Raft commands, so every replica
// expires the same producers at the same offset.
const producerExpiryMillis = 7 * 24 * 3600 * 1000

// expireEvery makes expiry run when the log end crosses a multiple of this many
// offsets: deterministic, and cheap enough to ignore on the hot path.
const expireEvery = 1 << 16

// batchMeta is what a duplicate check needs of one appended batch.
type batchMeta struct {
	firstSeq   int32
	lastSeq    int32
	baseOffset int64
}

// producerEntry is the idempotence state of one producer id in one partition.
type producerEntry struct {
	epoch         int16
	n             uint8 // batches held, ≤ producerHistory
	head          uint8 // index of the oldest batch in the ring
	lastTimestamp int64 // append time (ms) of the last batch, for expiry
	txnOpen       bool  // a transaction of this producer has data here and no marker yet
	txnFirst      int64 // first offset of the open transaction
	coordEpoch    int32 // coordinator epoch of the last marker (-1: none), fencing deposed coordinators
	batches       [producerHistory]batchMeta
}

func (e *producerEntry) last() *batchMeta {
	return &e.batches[(int(e.head)+int(e.n)-1)%producerHistory]
}

func (e *producerEntry) push(b batchMeta) {
	if e.n < producerHistory {
		e.batches[(int(e.head)+int(e.n))%producerHistory] = b
		e.n++
		return
	}
	e.batches[e.head] = b
	e.head = (e.head + 1) % producerHistory
}

// AbortedTxn is one entry of the aborted-transaction index (Kafka's .txnindex
// entry): the producer, the first offset of its aborted transaction, the
// offset of the abort marker, and the last stable offset when it aborted.
type AbortedTxn struct {
	ProducerID       int64
	FirstOffset      int64
	LastOffset       int64
	LastStableOffset int64
}

// producerState holds every producer's entry, the open transactions and the
// aborted-transaction index. Only the state machine writes it (Update, Sync
// and PrepareSnapshot, which dragonboat never runs concurrently); mu lets
// fetches and DescribeProducers read it. Batches without a producer id never
// take mu.
type producerState struct {
	mu      sync.Mutex
	m       map[int64]*producerEntry
	open    map[int64]int64 // producer id -> first offset of its open transaction
	aborted []AbortedTxn    // in marker order, so sorted by LastOffset
}

func newProducerState() *producerState {
	return &producerState{m: make(map[int64]*producerEntry), open: make(map[int64]int64)}
}

// lastSequence is Kafka's DefaultRecordBatch.incrementSequence: sequences wrap
// from MaxInt32 to 0.
func lastSequence(baseSeq, lastOffsetDelta int32) int32 {
	if baseSeq > math.MaxInt32-lastOffsetDelta {
		return lastOffsetDelta - (math.MaxInt32 - baseSeq) - 1
	}
	return baseSeq + lastOffsetDelta
}

func inSequence(lastSeq, nextSeq int32) bool {
	return int64(nextSeq) == int64(lastSeq)+1 || (nextSeq == 0 && lastSeq == math.MaxInt32)
}

// check applies Kafka's ProducerAppendInfo rules to a batch of producer pid. It
// returns dup=true with the original base offset when the batch repeats one of
// the producer's last batches, or a kerr error when it must be rejected.
func (s *producerState) check(pid int64, epoch int16, firstSeq, lastSeq int32) (dupBase int64, dup bool, err error) {
	e := s.m[pid]
	if e == nil {
		return 0, false, nil // unknown producer: accept its first sequence
	}
	if epoch < e.epoch {
		return 0, false, kerr.InvalidProducerEpoch // fenced, also when a marker bumped the epoch
	}
	if e.n == 0 {
		return 0, false, nil // only a marker seen: accept the first sequence of this epoch
	}
	if epoch == e.epoch {
		for i := 0; i < int(e.n); i++ {
			b := &e.batches[(int(e.head)+i)%producerHistory]
			if b.firstSeq == firstSeq && b.lastSeq == lastSeq {
				return b.baseOffset, true, nil
			}
		}
	}
	switch {
	case epoch < e.epoch:
		return 0, false, kerr.InvalidProducerEpoch
	case epoch > e.epoch:
		if firstSeq != 0 {
			return 0, false, kerr.OutOfOrderSequenceNumber
		}
	default:
		if !inSequence(e.last().lastSeq, firstSeq) {
			return 0, false, kerr.OutOfOrderSequenceNumber
		}
	}
	return 0, false, nil
}

// record notes an appended batch; check must have accepted it.
func (s *producerState) record(pid int64, epoch int16, b batchMeta, appendTime int64) {
	e := s.entry(pid, epoch)
	if e.n == 0 || epoch != e.epoch {
		e.epoch, e.n, e.head = epoch, 0, 0
	}
	e.push(b)
	e.lastTimestamp = appendTime
}

// entry returns pid's entry, created at epoch when unknown.
func (s *producerState) entry(pid int64, epoch int16) *producerEntry {
	e := s.m[pid]
	if e == nil {
		e = &producerEntry{epoch: epoch, coordEpoch: -1}
		s.m[pid] = e
	}
	return e
}

// checkEpoch rejects a write of an older epoch than the producer's (batches of
// the coordinator that carry no sequence, and markers), and a marker from a
// coordinator older than the last one that wrote for the producer
// (coordinatorEpoch -1: not a marker).
func (s *producerState) checkEpoch(pid int64, epoch int16, coordinatorEpoch int32) error {
	e := s.m[pid]
	switch {
	case e == nil:
	case epoch < e.epoch:
		return kerr.InvalidProducerEpoch
	case coordinatorEpoch >= 0 && coordinatorEpoch < e.coordEpoch:
		return kerr.TransactionCoordinatorFenced
	}
	return nil
}

// addTxnData notes a transactional batch at base: the first one opens the
// producer's transaction in this partition.
func (s *producerState) addTxnData(pid int64, epoch int16, base, appendTime int64) {
	e := s.entry(pid, epoch)
	e.lastTimestamp = appendTime
	if !e.txnOpen {
		e.txnOpen, e.txnFirst = true, base
		s.open[pid] = base
	}
}

// endTxn applies a marker written at offset: the producer's epoch moves up to
// the marker's (fencing older instances), and an abort of an open transaction
// enters the aborted index. lso is the last stable offset before the marker.
func (s *producerState) endTxn(pid int64, epoch int16, coordinatorEpoch int32, offset int64, commit bool, lso, appendTime int64) {
	e := s.entry(pid, epoch)
	if epoch > e.epoch {
		e.epoch, e.n, e.head = epoch, 0, 0
	}
	e.coordEpoch = max(e.coordEpoch, coordinatorEpoch)
	e.lastTimestamp = appendTime
	if !e.txnOpen {
		return
	}
	if !commit {
		s.aborted = append(s.aborted, AbortedTxn{ProducerID: pid, FirstOffset: e.txnFirst, LastOffset: offset, LastStableOffset: lso})
	}
	e.txnOpen = false
	delete(s.open, pid)
}

// stableBefore is the last stable offset for a log ending at next: the first
// offset of the oldest open transaction, else next.
func (s *producerState) stableBefore(next int64) int64 {
	lso := next
	for _, first := range s.open {
		lso = min(lso, first)
	}
	return lso
}

// abortedIn appends to dst the aborted transactions that may have data in
// [from, to): their marker is at or after from and they began before to.
func (s *producerState) abortedIn(dst []AbortedTxn, from, to int64) []AbortedTxn {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := sort.Search(len(s.aborted), func(i int) bool { return s.aborted[i].LastOffset >= from })
	for _, a := range s.aborted[i:] {
		if a.FirstOffset < to {
			dst = append(dst, a)
		}
	}
	return dst
}

// trimAborted drops index entries wholly below the log start (retention).
func (s *producerState) trimAborted(start int64) {
	i := sort.Search(len(s.aborted), func(i int) bool { return s.aborted[i].LastOffset >= start })
	if i > 0 {
		s.mu.Lock()
		s.aborted = slices.Delete(s.aborted, 0, i)
		s.mu.Unlock()
	}
}

// expire drops producers idle for producerExpiryMillis before now, except those
// with an open transaction (their data must stay above the last stable offset).
func (s *producerState) expire(now int64) {
	for pid, e := range s.m {
		if now-e.lastTimestamp > producerExpiryMillis && !e.txnOpen {
			delete(s.m, pid)
		}
	}
}

// ProducerInfo describes one producer of a partition (DescribeProducers).
type ProducerInfo struct {
	ProducerID    int64
	Epoch         int16
	LastSequence  int32
	LastTimestamp int64
	TxnFirst      int64 // -1 when no transaction is open
	CoordEpoch    int32 // coordinator epoch of the last marker, -1 if none
}

func (s *producerState) describe() []ProducerInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ProducerInfo, 0, len(s.m))
	for pid, e := range s.m {
		pi := ProducerInfo{ProducerID: pid, Epoch: e.epoch, LastSequence: -1, LastTimestamp: e.lastTimestamp, TxnFirst: -1, CoordEpoch: e.coordEpoch}
		if e.n > 0 {
			pi.LastSequence = e.last().lastSeq
		}
		if e.txnOpen {
			pi.TxnFirst = e.txnFirst
		}
		out = append(out, pi)
	}
	slices.SortFunc(out, func(a, b ProducerInfo) int { return int(min(max(a.ProducerID-b.ProducerID, -1), 1)) })
	return out
}

// Version 2 adds the open transaction per producer and the aborted index.
const producerStateVersion = 2

// encode writes the state compactly, producers sorted by id so equal states
// give equal bytes (snapshots must be deterministic).
func (s *producerState) encode(dst []byte) []byte {
	pids := make([]int64, 0, len(s.m))
	for pid := range s.m {
		pids = append(pids, pid)
	}
	slices.Sort(pids)
	dst = append(dst, producerStateVersion)
	dst = binary.AppendUvarint(dst, uint64(len(pids)))
	for _, pid := range pids {
		e := s.m[pid]
		dst = binary.AppendVarint(dst, pid)
		dst = binary.BigEndian.AppendUint16(dst, uint16(e.epoch))
		dst = binary.AppendVarint(dst, e.lastTimestamp)
		dst = append(dst, e.n)
		for i := 0; i < int(e.n); i++ {
			b := &e.batches[(int(e.head)+i)%producerHistory]
			dst = binary.AppendVarint(dst, int64(b.firstSeq))
			dst = binary.AppendVarint(dst, int64(b.lastSeq))
			dst = binary.AppendVarint(dst, b.baseOffset)
		}
		txnFirst := int64(-1)
		if e.txnOpen {
			txnFirst = e.txnFirst
		}
		dst = binary.AppendVarint(dst, txnFirst)
		dst = binary.AppendVarint(dst, int64(e.coordEpoch))
	}
	dst = binary.AppendUvarint(dst, uint64(len(s.aborted)))
	for _, a := range s.aborted {
		dst = binary.AppendVarint(dst, a.ProducerID)
		dst = binary.AppendVarint(dst, a.FirstOffset)
		dst = binary.AppendVarint(dst, a.LastOffset)
		dst = binary.AppendVarint(dst, a.LastStableOffset)
	}
	return dst
}

var errBadProducerState = errors.New("replica: malformed producer state")

// decodeProducerState reads what encode wrote; empty input is an empty state.
func decodeProducerState(b []byte) (*producerState, error) {
	s := newProducerState()
	if len(b) == 0 {
		return s, nil
	}
	version := b[0]
	if version != 1 && version != producerStateVersion {
		return nil, errBadProducerState
	}
	r := byteReader{b: b[1:]}
	count := r.uvarint()
	for i := uint64(0); i < count && r.err == nil; i++ {
		pid := r.varint()
		e := &producerEntry{epoch: int16(r.uint16()), lastTimestamp: r.varint(), coordEpoch: -1}
		n := r.byte()
		if n > producerHistory {
			return nil, errBadProducerState
		}
		for j := uint8(0); j < n; j++ {
			e.push(batchMeta{firstSeq: int32(r.varint()), lastSeq: int32(r.varint()), baseOffset: r.varint()})
		}
		if version >= 2 {
			if first := r.varint(); first >= 0 {
				e.txnOpen, e.txnFirst = true, first
				s.open[pid] = first
			}
			e.coordEpoch = int32(r.varint())
		}
		s.m[pid] = e
	}
	if version >= 2 {
		n := r.uvarint()
		for i := uint64(0); i < n && r.err == nil; i++ {
			s.aborted = append(s.aborted, AbortedTxn{ProducerID: r.varint(), FirstOffset: r.varint(), LastOffset: r.varint(), LastStableOffset: r.varint()})
		}
	}
	if r.err != nil {
		return nil, r.err
	}
	return s, nil
}

// byteReader decodes the compact encodings of this package; the first error
// sticks and later reads return zero.
type byteReader struct {
	b   []byte
	err error
}

func (r *byteReader) fail() {
	if r.err == nil {
		r.err = errBadProducerState
	}
	r.b = nil
}

func (r *byteReader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *byteReader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *byteReader) uint16() uint16 {
	if len(r.b) < 2 {
		r.fail()
		return 0
	}
	v := binary.BigEndian.Uint16(r.b)
	r.b = r.b[2:]
	return v
}

func (r *byteReader) byte() uint8 {
	if len(r.b) < 1 {
		r.fail()
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

// duplicate reports whether a batch repeats one of pid's last applied batches of this epoch, and
// the original's base offset.
func (s *producerState) duplicate(pid int64, epoch int16, firstSeq, lastSeq int32) (int64, bool) {
	e := s.m[pid]
	if e == nil || e.epoch != epoch {
		return 0, false
	}
	for i := 0; i < int(e.n); i++ {
		b := &e.batches[(int(e.head)+i)%producerHistory]
		if b.firstSeq == firstSeq && b.lastSeq == lastSeq {
			return b.baseOffset, true
		}
	}
	return 0, false
}
