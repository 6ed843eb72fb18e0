package replica

import (
	"sync"

	"github.com/twmb/franz-go/pkg/kerr"

	recordbatch "github.com/sluicebroker/sluice/batch"
	"github.com/sluicebroker/sluice/raftlog"
	"github.com/sluicebroker/sluice/segment"
)

// Admission: with the segment Raft log a batch takes its offsets when Raft stores its entry, so a
// batch that Kafka's idempotence rules refuse (a duplicate, a gap, a fenced epoch) must be refused
// before it is proposed: once in the log it is in every replica's log. The leader checks each
// idempotent batch against the producer state the state machine has applied plus the batches it
// has proposed and not yet seen applied, and only once every entry of earlier terms is applied, as
// Redpanda does: a new leader first proposes a barrier and waits for it to apply.
//
// Raft drops proposals while the leader hands leadership away. A dropped batch is not in the log
// but was counted in flight, so after a drop (or a transfer that did not happen) the leader is not
// ready again until a new barrier has applied; during a transfer it takes no idempotent batch.
//
// Proposals are numbered (the command's proposal number) and the term is in the command, so when
// the state machine applies this leader's proposal n, every earlier proposal of the term that has
// not been applied never will be (Raft keeps a leader's proposals in order): they leave the
// in-flight set. A retry of a batch still in flight gets a retriable error; once its original
// applies, the retry is answered as a duplicate with the original's offset.

// inflightProducer is what one producer has in flight on this leader.
type inflightProducer struct {
	epoch   int16
	lastSeq int32
	n       int                       // batches in flight
	recent  [producerHistory][2]int32 // the newest in-flight batches' first and last sequences
	next    uint8                     // where the next one goes in recent
}

// inflightBatch is one admitted proposal, in proposal order.
type inflightBatch struct {
	proposal uint64
	pid      int64
}

// admission is a partition leader's in-flight idempotent state for one term.
type admission struct {
	mu      sync.Mutex // held across check and propose, so a refused proposal is undone exactly
	term    int32      // the term this state is for
	ready   bool       // every entry of earlier terms, and every proposal of this term before the last barrier, is applied or gone
	barrier uint64     // the proposal number of the barrier in flight, 0 if none
	// transferring: this node is handing leadership away. Raft drops the proposals it receives
	// meanwhile, and one dropped before others that land would leave a gap in a producer's
	// sequences: idempotent batches wait until the term changes or a barrier after the transfer.
	transferring bool
	proposal     uint64          // the last proposal number handed out (any produce)
	parked       []parkedProduce // idempotent batches waiting for ready, in arrival order

	// Under producerState.mu (the state machine retires them as it applies):
	producers map[int64]*inflightProducer
	queue     []inflightBatch
}

// reset starts the state for a new term (callers hold a.mu and the producer state's mu).
func (a *admission) reset(term int32) {
	a.term, a.ready, a.barrier, a.transferring = term, false, 0, false
	clear(a.producers)
	a.queue = a.queue[:0]
}

// admit checks an idempotent batch against the applied producer state and what is in flight, and
// if it is accepted records it as in flight under proposal. Callers hold a.mu and ps.mu.
func (a *admission) admit(ps *producerState, h segment.Header, batch []byte, proposal uint64) (dupBase int64, dup bool, err error) {
	pid, epoch := h.ProducerID, h.ProducerEpoch
	sequenced := h.BaseSequence >= 0 && !h.IsControl()
	in := a.producers[pid]
	if !sequenced {
		// Coordinator writes and markers: their epoch is checked, nothing is tracked.
		if in != nil && in.n > 0 && epoch < in.epoch {
			return 0, false, kerr.InvalidProducerEpoch
		}
		return 0, false, ps.checkEpoch(pid, epoch, recordbatch.MarkerCoordinatorEpoch(batch))
	}
	firstSeq, lastSeq := h.BaseSequence, lastSequence(h.BaseSequence, h.LastOffsetDelta)
	if in == nil || in.n == 0 {
		if dupBase, dup, err = ps.check(pid, epoch, firstSeq, lastSeq); dup || err != nil {
			return dupBase, dup, err
		}
	} else {
		if epoch < in.epoch {
			return 0, false, kerr.InvalidProducerEpoch
		}
		if dupBase, dup = ps.duplicate(pid, epoch, firstSeq, lastSeq); dup {
			return dupBase, true, nil
		}
		if epoch == in.epoch {
			for _, r := range in.recent {
				if r[0] == firstSeq && r[1] == lastSeq {
					// The original is still in flight: the client retries, then gets its offset.
					return 0, false, kerr.RequestTimedOut
				}
			}
			if !inSequence(in.lastSeq, firstSeq) {
				return 0, false, kerr.OutOfOrderSequenceNumber
			}
		} else if firstSeq != 0 {
			return 0, false, kerr.OutOfOrderSequenceNumber
		}
	}
	if in == nil {
		if a.producers == nil {
			a.producers = make(map[int64]*inflightProducer)
		}
		in = &inflightProducer{}
		for i := range in.recent {
			in.recent[i] = [2]int32{-1, -1}
		}
		a.producers[pid] = in
	}
	in.epoch, in.lastSeq = epoch, lastSeq
	in.recent[in.next] = [2]int32{firstSeq, lastSeq}
	in.next = (in.next + 1) % producerHistory
	in.n++
	a.queue = append(a.queue, inflightBatch{proposal: proposal, pid: pid})
	return 0, false, nil
}

// undo withdraws the last admitted batch (its proposal failed before reaching Raft), restoring
// the producer's in-flight state saved before admit. Callers hold a.mu and ps.mu.
func (a *admission) undo(pid int64, saved inflightProducer, existed bool) {
	if n := len(a.queue); n > 0 && a.queue[n-1].pid == pid {
		a.queue = a.queue[:n-1]
	}
	if !existed {
		delete(a.producers, pid)
		return
	}
	if in := a.producers[pid]; in != nil {
		*in = saved
	}
}

// retire drops the in-flight batches up to proposal n of the current term: applied, or never to
// be. Callers hold ps.mu.
func (a *admission) retire(c raftlog.Command) {
	if len(a.queue) == 0 || c.Epoch != a.term || c.Proposal == 0 {
		return
	}
	k := 0
	for k < len(a.queue) && a.queue[k].proposal <= c.Proposal {
		if in := a.producers[a.queue[k].pid]; in != nil {
			if in.n--; in.n <= 0 {
				delete(a.producers, a.queue[k].pid)
			}
		}
		k++
	}
	a.queue = append(a.queue[:0], a.queue[k:]...)
}

// describe says, for a refused batch's log line, what the leader held for the producer: the
// applied epoch and last sequence, and what it had in flight. Callers hold a.mu and ps.mu.
func (a *admission) describe(ps *producerState, pid int64) (appliedEpoch int16, appliedLast int32, inflightEpoch int16, inflightLast int32, inflight int) {
	appliedEpoch, appliedLast, inflightEpoch, inflightLast = -1, -1, -1, -1
	if e := ps.m[pid]; e != nil {
		appliedEpoch = e.epoch
		if e.n > 0 {
			appliedLast = e.last().lastSeq
		}
	}
	if in := a.producers[pid]; in != nil {
		inflightEpoch, inflightLast, inflight = in.epoch, in.lastSeq, in.n
	}
	return
}
