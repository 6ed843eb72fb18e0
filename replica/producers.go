package replica

import (
	"encoding/binary"
	"errors"
	"math"
	"slices"

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

// producerState holds every producer's entry. It is touched only by the state
// machine's Update, Sync and PrepareSnapshot, which dragonboat never runs
// concurrently, so it has no lock.
type producerState struct {
	m map[int64]*producerEntry
}

func newProducerState() *producerState {
	return &producerState{m: make(map[int64]*producerEntry)}
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
	if e == nil || e.n == 0 {
		return 0, false, nil // unknown producer: accept its first sequence
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
	e := s.m[pid]
	if e == nil {
		e = &producerEntry{}
		s.m[pid] = e
	}
	if e.n == 0 || epoch != e.epoch {
		e.epoch, e.n, e.head = epoch, 0, 0
	}
	e.push(b)
	e.lastTimestamp = appendTime
}

// expire drops producers idle for producerExpiryMillis before now.
func (s *producerState) expire(now int64) {
	for pid, e := range s.m {
		if now-e.lastTimestamp > producerExpiryMillis {
			delete(s.m, pid)
		}
	}
}

const producerStateVersion = 1

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
	if b[0] != producerStateVersion {
		return nil, errBadProducerState
	}
	r := byteReader{b: b[1:]}
	count := r.uvarint()
	for i := uint64(0); i < count && r.err == nil; i++ {
		pid := r.varint()
		e := &producerEntry{epoch: int16(r.uint16()), lastTimestamp: r.varint()}
		n := r.byte()
		if n > producerHistory {
			return nil, errBadProducerState
		}
		for j := uint8(0); j < n; j++ {
			e.push(batchMeta{firstSeq: int32(r.varint()), lastSeq: int32(r.varint()), baseOffset: r.varint()})
		}
		s.m[pid] = e
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
