package replica

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	sm "github.com/lni/dragonboat/v4/statemachine"
	"github.com/twmb/franz-go/pkg/kerr"

	recordbatch "github.com/sluicebroker/sluice/batch"
	"github.com/sluicebroker/sluice/metrics"
	"github.com/sluicebroker/sluice/raftlog"
	"github.com/sluicebroker/sluice/segment"
)

// stateMachine is the dragonboat on-disk state machine of one partition. The partition's segment
// log is also its Raft log (package raftlog): the store wrote each batch when Raft saved its entry,
// so applying a committed entry only moves the high watermark and the producer state; the log holds
// entries not yet committed above next. dragonboat creates a new one every time the shard starts.
type stateMachine struct {
	p         *Partition
	log       *segment.Log
	rl        *raftlog.Partition // the Raft log store's view of this partition
	producers *producerState
	applied   uint64        // Raft index of the last applied entry
	next      int64         // offset after the last applied batch: the high watermark
	closed    chan struct{} // closed once Close has closed the log

	// The last snapshot (Sync) and whether one has been asked for (maybeSnapshot).
	syncedIndex atomic.Uint64
	syncedAt    atomic.Int64 // metrics.Mono
	snapAsked   atomic.Bool
	snapCheck   uint64 // applied index at which maybeSnapshot looks next
}

var _ sm.IOnDiskStateMachine = (*stateMachine)(nil)

// Open opens the state machine over the partition's log (opened and recovered by the Raft log
// store) and resumes from its checkpoint.
func (s *stateMachine) Open(stop <-chan struct{}) (uint64, error) {
	store := s.p.host.RaftLog()
	if store == nil {
		return 0, fmt.Errorf("replica: %s: no Raft log store", s.p.dir)
	}
	return s.openRaftLog(store)
}

// openRaftLog opens the state machine over the segment Raft log: the store has the segment open
// and recovered (cut back to what it and the Raft metadata both hold); the checkpoint says how
// far the state machine had applied, and Raft replays the committed entries after it.
func (s *stateMachine) openRaftLog(store *raftlog.Store) (uint64, error) {
	p := s.p
	rl, err := store.Partition(p.shardID, p.host.NodeID())
	if err != nil {
		return 0, fmt.Errorf("replica: %s: %w", p.dir, err)
	}
	log := rl.Log()
	if log == nil {
		return 0, fmt.Errorf("replica: %s: the partition's log was deleted", p.dir)
	}
	cp := log.Checkpoint()
	if cp.NextOffset < log.StartOffset() || cp.NextOffset > log.NextOffset() {
		return 0, fmt.Errorf("replica: %s: checkpoint at offset %d outside the log [%d, %d)", p.dir, cp.NextOffset, log.StartOffset(), log.NextOffset())
	}
	producers, err := decodeProducerState(cp.Extra)
	if err != nil {
		return 0, fmt.Errorf("replica: %s: %w", p.dir, err)
	}
	p.logger.Info("opening partition log", "dir", p.dir, "start_offset", log.StartOffset(), "log_end", log.NextOffset(),
		"checkpoint_index", cp.AppliedIndex, "checkpoint_offset", cp.NextOffset)
	// Committed batches past the checkpoint come back with the replay: until then a fetch of
	// them must not look like a fetch past the log end.
	p.replayTo.Store(log.NextOffset())
	s.rl, s.log, s.producers, s.applied, s.next = rl, log, producers, cp.AppliedIndex, cp.NextOffset
	s.syncedIndex.Store(cp.AppliedIndex)
	s.syncedAt.Store(int64(metrics.Now()))
	s.closed = p.attach(log, producers, s.next)
	return cp.AppliedIndex, nil
}

// Update applies committed entries in order. Everything it decides comes from
// the entries and the log, so every replica assigns the same offsets.
func (s *stateMachine) Update(entries []sm.Entry) ([]sm.Entry, error) {
	for i := range entries {
		e := &entries[i]
		v, err := s.applyStored(e)
		if err != nil {
			return nil, err
		}
		e.Result.Value = v
		s.applied = e.Index
	}
	if len(entries) > 0 {
		next := s.next
		if len(s.producers.open) == 0 {
			s.p.lso.Store(next) // the common case: no map walk, no lock
		} else {
			s.producers.mu.Lock()
			s.p.lso.Store(s.producers.stableBefore(next))
			s.producers.mu.Unlock()
		}
		s.p.advance(next)
		if s.applied >= s.snapCheck {
			s.maybeSnapshot()
		}
	}
	return entries, nil
}

// snapshotCheckEvery is how many applied entries maybeSnapshot lets pass between looks (a clock
// read each).
const snapshotCheckEvery = 64

// maybeSnapshot asks for a snapshot when one is due: quorum.Host.SnapshotDue spaces them in
// entries and in time, since each one holds this partition's apply while it Syncs the log and
// writes dragonboat's snapshot files. dragonboat's own entry-count trigger stays as the ceiling.
func (s *stateMachine) maybeSnapshot() {
	s.snapCheck = s.applied + snapshotCheckEvery
	host := s.p.host
	if host == nil || s.snapAsked.Load() {
		return
	}
	elapsed := time.Duration(metrics.Now() - metrics.Mono(s.syncedAt.Load()))
	if !host.SnapshotDue(s.p.shardID, s.applied-s.syncedIndex.Load(), elapsed) {
		return
	}
	s.snapAsked.Store(true)
	asked := &s.snapAsked
	host.RequestSnapshot(s.p.shardID, func() { asked.Store(false) })
}

// record applies a batch now in the log at base to the producer state. It reads everything from the
// batch but the append time (a marker's commit or abort too), so an entry the Raft log store rebuilt
// from the segment after a power loss applies as the original did.
func (s *stateMachine) record(h segment.Header, batch []byte, base, appendTime int64) {
	idempotent := h.ProducerID >= 0
	sequenced := idempotent && h.BaseSequence >= 0 && !h.IsControl()
	if idempotent {
		ps := s.producers
		ps.mu.Lock()
		switch {
		case h.IsControl():
			ps.endTxn(h.ProducerID, h.ProducerEpoch, recordbatch.MarkerCoordinatorEpoch(batch), base, recordbatch.MarkerCommits(batch), ps.stableBefore(base), appendTime)
		case sequenced:
			ps.record(h.ProducerID, h.ProducerEpoch, batchMeta{firstSeq: h.BaseSequence, lastSeq: lastSequence(h.BaseSequence, h.LastOffsetDelta), baseOffset: base}, appendTime)
		}
		if h.IsTransactional() && !h.IsControl() {
			ps.addTxnData(h.ProducerID, h.ProducerEpoch, base, appendTime)
		}
		ps.mu.Unlock()
	}
	if next := base + int64(h.LastOffsetDelta) + 1; next/expireEvery != base/expireEvery {
		s.producers.mu.Lock()
		s.producers.expire(appendTime)
		s.producers.mu.Unlock()
	}
}

// applyStored applies a committed entry whose batch the segment Raft log already holds: its
// offsets are the ones the store gave it. The leader admitted it before proposing (admission.go),
// so it is recorded whatever the checks here would say: it is in the log, on every replica.
func (s *stateMachine) applyStored(e *sm.Entry) (uint64, error) {
	c, batch, h, ok := raftlog.StoredBatch(e.Cmd)
	if !ok {
		if c, _, ok := raftlog.ParseCommand(e.Cmd); ok && c.Kind == raftlog.KindBarrier {
			s.p.applied(c)
			return 0, nil
		}
		return errorResult(kerr.CorruptMessage), nil
	}
	base, err := s.rl.BatchOffset(e.Index)
	if errors.Is(err, raftlog.ErrStaleBatch) {
		// Proposed in a term that ended before Raft appended it: not in the log.
		s.p.applied(c)
		return errorResult(kerr.NotLeaderForPartition), nil
	}
	if errors.Is(err, raftlog.ErrNoBatch) {
		// Raft saved a snapshot that dragonboat did not load into this state machine (it had
		// applied all its batches): the log as applied is the snapshot's.
		if waited, kerr := s.rl.KeepLog(s.next); waited && kerr == nil {
			base, err = s.rl.BatchOffset(e.Index)
		} else if kerr != nil {
			err = kerr
		}
	}
	if err != nil {
		return 0, fmt.Errorf("replica: %s: applying entry %d: %w", s.p.dir, e.Index, err)
	}
	if base != s.next {
		return 0, fmt.Errorf("replica: %s: entry %d holds offset %d, the log was applied to %d", s.p.dir, e.Index, base, s.next)
	}
	s.next = base + int64(h.LastOffsetDelta) + 1
	s.record(h, batch, base, c.AppendTime)
	s.p.applied(c)
	return okResult(base, false), nil
}

// Lookup answers nothing yet: reads go to the Partition directly.
func (s *stateMachine) Lookup(any) (any, error) {
	return nil, errors.New("replica: lookup not supported")
}

// Sync makes everything applied so far durable and records how far that is,
// with the producer state as of that point.
func (s *stateMachine) Sync() error {
	if s.log == nil {
		return nil
	}
	s.producers.trimAborted(s.log.StartOffset())
	applied := s.applied
	s.log.SetCheckpoint(segment.Checkpoint{
		AppliedIndex: applied,
		NextOffset:   s.next,
		Extra:        s.producers.encode(nil),
	})
	start := metrics.Now()
	err := s.log.Sync()
	metrics.SnapshotSyncSeconds.Observe(start.Seconds())
	if err == nil {
		s.syncedIndex.Store(applied)
		s.syncedAt.Store(int64(metrics.Now()))
	}
	return err
}

// Close syncs (a clean stop replays nothing at the next start) and closes the
// log, or deletes it when the partition is being deleted; the Partition stops
// serving reads until the shard opens again.
func (s *stateMachine) Close() error {
	if s.log == nil {
		return nil
	}
	defer close(s.closed)
	log := s.log
	// The store owns the log (it stays open for Raft); a deleted partition's goes.
	var err error
	if s.p.detach(log) {
		err = s.rl.Delete()
	} else {
		err = s.Sync()
	}
	s.log = nil
	return err
}
