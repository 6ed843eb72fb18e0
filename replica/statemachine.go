package replica

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	sm "github.com/lni/dragonboat/v4/statemachine"
	"github.com/twmb/franz-go/pkg/kerr"

	recordbatch "github.com/sluicebroker/sluice/batch"
	"github.com/sluicebroker/sluice/raftlog"
	"github.com/sluicebroker/sluice/segment"
)

// stateMachine is the dragonboat on-disk state machine of one partition. It
// applies committed produce commands to the partition's segment log; the
// Partition it serves reads the same log. dragonboat creates a new one every
// time the shard starts.
//
// Two storage modes. With the segment Raft log (quorum.LogDBSegment, rl set) the log is also the
// Raft log: the store wrote each batch when Raft saved its entry, so applying a committed entry
// only moves the high watermark and the producer state, and the log holds entries not yet
// committed above next. Otherwise (tan, pebble) the state machine appends each committed batch.
type stateMachine struct {
	p         *Partition
	log       *segment.Log
	rl        *raftlog.Partition // the segment Raft log's view of this partition; nil in the append mode
	producers *producerState
	applied   uint64        // Raft index of the last applied entry
	next      int64         // offset after the last applied batch: the high watermark
	closed    chan struct{} // closed once Close has closed the log
	scratch   []byte        // the batch being appended, with its broker-owned fields set
	epoch     int32         // the leader epoch of the last batch appended (epochs.go)
}

var _ sm.IOnDiskStateMachine = (*stateMachine)(nil)

// Open opens the segment log and resumes from its checkpoint: data past the
// checkpoint is cut because Raft re-delivers every entry above the returned
// index, and re-applying it must not append twice.
func (s *stateMachine) Open(stop <-chan struct{}) (uint64, error) {
	p := s.p
	if store := p.host.RaftLog(); store != nil {
		return s.openRaftLog(store)
	}
	if err := claimDir(p.dir, p.shardID); err != nil {
		return 0, fmt.Errorf("replica: %s: %w", p.dir, err)
	}
	log, err := segment.Open(p.dir, p.options().Log)
	if err != nil {
		return 0, fmt.Errorf("replica: open %s: %w", p.dir, err)
	}
	cp := log.Checkpoint()
	next := log.NextOffset()
	p.logger.Info("opening partition log", "dir", p.dir, "start_offset", log.StartOffset(), "next_offset", next,
		"checkpoint_index", cp.AppliedIndex, "checkpoint_offset", cp.NextOffset)
	// Batches past the checkpoint were applied, so committed, before the
	// restart: until the replay brings them back, a fetch of them must not
	// look like a fetch past the log end.
	p.replayTo.Store(next)
	if start := log.StartOffset(); cp.NextOffset < start {
		// Retention removed segments past the checkpoint before the crash:
		// the log restarts empty at the checkpoint and the replay rebuilds it
		// (retention removes those batches again later).
		log.Close()
		if log, err = restartLogAt(p.dir, cp.NextOffset, p.options().Log); err != nil {
			return 0, err
		}
		next = log.NextOffset()
	}
	if next > cp.NextOffset {
		if err := log.TruncateTo(cp.NextOffset); err != nil {
			log.Close()
			return 0, fmt.Errorf("replica: truncate %s to checkpoint %d: %w", p.dir, cp.NextOffset, err)
		}
	} else if next < cp.NextOffset {
		// The checkpoint is written after the data is fsynced, so this means
		// lost data that Raft will not re-deliver.
		p.logger.Error("segment log is behind its checkpoint", "dir", p.dir, "next_offset", next, "checkpoint", cp.NextOffset)
	}
	producers, err := decodeProducerState(cp.Extra)
	if err != nil {
		log.Close()
		return 0, fmt.Errorf("replica: %s: %w", p.dir, err)
	}
	s.log, s.producers, s.applied = log, producers, cp.AppliedIndex
	s.epoch = lastEpoch(log)
	s.next = log.NextOffset()
	s.closed = p.attach(log, producers, s.next)
	return cp.AppliedIndex, nil
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
	s.closed = p.attach(log, producers, s.next)
	return cp.AppliedIndex, nil
}

// restartLogAt empties the log in dir and reopens it starting at offset
// (segment files are named by base offset); checkpoint files stay.
func restartLogAt(dir string, offset int64, opts segment.Options) (*segment.Log, error) {
	names, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, de := range names {
		if _, ok := segmentBase(de.Name()); ok || strings.HasSuffix(de.Name(), ".index") || strings.HasSuffix(de.Name(), ".timeindex") {
			if err := os.Remove(filepath.Join(dir, de.Name())); err != nil {
				return nil, err
			}
		}
	}
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%020d.log", offset)))
	if err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	if err := syncDir(dir); err != nil {
		return nil, err
	}
	log, err := segment.Open(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("replica: reopen %s at offset %d: %w", dir, offset, err)
	}
	if log.StartOffset() != offset || log.NextOffset() != offset {
		log.Close()
		return nil, fmt.Errorf("replica: %s: log restarted at %d holds [%d, %d)", dir, offset, log.StartOffset(), log.NextOffset())
	}
	return log, nil
}

// Update applies committed entries in order. Everything it decides comes from
// the entries and the log, so every replica assigns the same offsets.
func (s *stateMachine) Update(entries []sm.Entry) ([]sm.Entry, error) {
	for i := range entries {
		e := &entries[i]
		var v uint64
		var err error
		if s.rl != nil {
			v, err = s.applyStored(e)
		} else {
			v, err = s.apply(e.Cmd)
		}
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
	}
	return entries, nil
}

// maxKeptScratch is the largest scratch buffer a state machine keeps between
// batches.
const maxKeptScratch = 64 << 10

// apply applies one command and returns its encoded result; an error return
// is fatal (the log could not be written).
func (s *stateMachine) apply(cmd []byte) (uint64, error) {
	c, batch, ok := raftlog.ParseCommand(cmd)
	if !ok {
		return errorResult(kerr.InvalidRequest), nil
	}
	flags, leaderEpoch, appendTime := c.Flags, c.Epoch, c.AppendTime
	h, err := segment.ParseHeader(batch)
	// The broker validated the batch (CRC included); these are the checks
	// whose failure would make Append fail, which must never be fatal.
	if err != nil || h.Size() != len(batch) || h.LastOffsetDelta < 0 {
		return errorResult(kerr.CorruptMessage), nil
	}

	if h.IsControl() != (flags&flagControl != 0) || h.IsControl() && h.ProducerID < 0 {
		return errorResult(kerr.InvalidRecord), nil
	}
	idempotent := h.ProducerID >= 0
	// Batches the coordinators write (transactional offsets, markers) carry a
	// producer id but no sequence: only their epoch is checked.
	sequenced := idempotent && h.BaseSequence >= 0 && !h.IsControl()
	var firstSeq, lastSeq int32
	if idempotent {
		ps := s.producers
		ps.mu.Lock()
		var base int64
		var dup bool
		var err error
		if sequenced {
			firstSeq, lastSeq = h.BaseSequence, lastSequence(h.BaseSequence, h.LastOffsetDelta)
			base, dup, err = ps.check(h.ProducerID, h.ProducerEpoch, firstSeq, lastSeq)
		} else {
			err = ps.checkEpoch(h.ProducerID, h.ProducerEpoch, recordbatch.MarkerCoordinatorEpoch(batch))
		}
		ps.mu.Unlock()
		if err != nil {
			return errorResult(err), nil
		}
		if dup {
			return okResult(base, true), nil
		}
	}

	// Entry.Cmd is read-only (dragonboat may still be sending or persisting
	// it): the broker-owned fields are set in a copy, which costs little
	// next to the write.
	s.scratch = append(s.scratch[:0], batch...)
	batch = s.scratch
	// Non-decreasing in offset order (epochs.go): a proposal stamped by an old term can be
	// committed after one of a newer term when the same node leads both.
	leaderEpoch = max(leaderEpoch, s.epoch)
	s.epoch = leaderEpoch
	segment.PutPartitionLeaderEpoch(batch, leaderEpoch)
	if flags&flagLogAppendTime != 0 {
		segment.SetLogAppendTime(batch, appendTime)
	}
	base, err := s.log.Append(batch)
	if cap(s.scratch) > maxKeptScratch {
		s.scratch = nil // thousands of partitions must not each keep a large buffer
	}
	if err != nil {
		return 0, fmt.Errorf("replica: append to %s: %w", s.p.dir, err)
	}
	s.next = base + int64(h.LastOffsetDelta) + 1
	s.record(h, batch, base, appendTime)
	return okResult(base, false), nil
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
	s.log.SetCheckpoint(segment.Checkpoint{
		AppliedIndex: s.applied,
		NextOffset:   s.next,
		Extra:        s.producers.encode(nil),
	})
	return s.log.Sync()
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
	var err error
	if s.rl != nil {
		// The store owns the log (it stays open for Raft); a deleted partition's goes.
		if s.p.detach(log) {
			err = s.rl.Delete()
		} else {
			err = s.Sync()
		}
	} else if s.p.detach(log) {
		err = log.Delete()
	} else {
		err = s.Sync()
		if cerr := log.Close(); err == nil {
			err = cerr
		}
	}
	s.log = nil
	return err
}
