package raftlog

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"

	"github.com/sluicebroker/sluice/internal/diskio"
	"github.com/sluicebroker/sluice/segment"
)

// Partition is a partition shard's log as its state machine sees it.
type Partition struct{ sh *shard }

// Partition opens (if needed) the registered partition shard and returns its view.
func (s *Store) Partition(shardID, replicaID uint64) (*Partition, error) {
	sh, err := s.shard(shardID, replicaID)
	if err != nil {
		return nil, err
	}
	if sh.part == nil {
		return nil, fmt.Errorf("raftlog: shard %d is not a registered partition", shardID)
	}
	return &Partition{sh: sh}, nil
}

// Log is the partition's segment log (nil once deleted). Readers bound their reads by the high
// watermark: the log also holds entries not yet committed.
func (p *Partition) Log() *segment.Log {
	p.sh.mu.Lock()
	defer p.sh.mu.Unlock()
	return p.sh.seg
}

// ErrNoBatch: the entry at that index holds no batch in the segment.
var ErrNoBatch = errors.New("raftlog: entry holds no batch")

// ErrStaleBatch: the entry at that index holds a batch proposed in another term than the entry's;
// it takes no offsets (see proposedInTerm) and its proposer is answered NOT_LEADER.
var ErrStaleBatch = errors.New("raftlog: batch proposed in another term than its entry's")

// BatchOffset is the base offset the store gave entry index's batch.
func (p *Partition) BatchOffset(index uint64) (int64, error) {
	sh := p.sh
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if index <= sh.marker || index > sh.lastIndex() {
		return 0, fmt.Errorf("raftlog: shard %d: entry %d outside (%d, %d]", sh.id, index, sh.marker, sh.lastIndex())
	}
	e := &sh.ents[index-sh.marker-1]
	if e.staleBatch() {
		return 0, ErrStaleBatch
	}
	if !e.inSegment {
		return 0, ErrNoBatch
	}
	return e.offset, nil
}

// RetentionFloor is the lowest offset Raft may still read back: retention keeps the segments at
// and above it.
func (p *Partition) RetentionFloor() int64 {
	sh := p.sh
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for i := range sh.ents {
		if sh.ents[i].inSegment {
			return sh.ents[i].offset
		}
	}
	return math.MaxInt64
}

// ReplaceLog installs a received snapshot's segments, built in tmpDir, as the partition's log,
// then writes into it the batches of the entries saved since the snapshot (kept inline until now).
// index is the snapshot's Raft index. The caller has stopped serving reads from the old log.
// It returns the log and the offset the snapshot's segments end at.
//
// Raft may have saved a newer snapshot before the state machine installs an older one (two sent
// in a row): the older one's segments serve until the newer one's arrive, and the entries saved
// after the newer one keep waiting for it.
func (p *Partition) ReplaceLog(tmpDir string, index uint64) (*segment.Log, int64, error) {
	sh := p.sh
	sh.mu.Lock()
	defer sh.mu.Unlock()
	dir := sh.part.Dir
	if sh.seg != nil {
		sh.seg.Close()
		sh.seg = nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, 0, err
	}
	if err := os.Rename(tmpDir, dir); err != nil {
		return nil, 0, err
	}
	if err := diskio.SyncDir(filepath.Dir(dir)); err != nil {
		return nil, 0, err
	}
	seg, err := segment.Open(dir, sh.part.Options)
	if err != nil {
		return nil, 0, fmt.Errorf("raftlog: open %s from snapshot: %w", dir, err)
	}
	if sh.awaiting && index != sh.marker {
		sh.seg = seg
		sh.logger.Info("installed an older snapshot than the one saved last; waiting for the newer", "installed", index, "saved", sh.marker)
		return seg, seg.NextOffset(), nil
	}
	sh.seg, sh.segBase, sh.awaiting = seg, seg.NextOffset(), false
	if err := sh.materialize(); err != nil {
		return nil, 0, err
	}
	return seg, sh.segBase, nil
}

// KeepLog ends a wait for a received snapshot that the state machine will not install: dragonboat
// skips loading a snapshot whose state-machine entries the replica has all applied (only entries
// without a batch lie between). The log up to next, where the state machine has applied to, is
// then the snapshot's: the rest is cut, and the batches saved since the snapshot are written after
// it. It reports whether the store was waiting.
func (p *Partition) KeepLog(next int64) (bool, error) {
	sh := p.sh
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if !sh.awaiting || sh.seg == nil {
		return false, nil
	}
	if sh.seg.NextOffset() > next {
		if err := sh.seg.TruncateTo(next); err != nil {
			return true, fmt.Errorf("raftlog: shard %d: cut the log to %d after a snapshot it keeps: %w", sh.id, next, err)
		}
	}
	if got := sh.seg.NextOffset(); got != next {
		return true, fmt.Errorf("raftlog: shard %d: the log ends at %d, the state machine applied to %d", sh.id, got, next)
	}
	sh.logger.Info("keeping the log through a snapshot the state machine did not need", "snapshot_index", sh.marker, "offset", next)
	sh.segBase, sh.awaiting = next, false
	return true, sh.materialize()
}

// Delete closes the partition's log and removes its directory (the topic is deleted); entries
// saved from now on stay inline until dragonboat removes the replica's data.
func (p *Partition) Delete() error {
	sh := p.sh
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.seg == nil {
		return nil
	}
	err := sh.seg.Delete()
	sh.seg = nil
	return err
}
