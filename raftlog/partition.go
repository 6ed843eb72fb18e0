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

// BatchOffset is the base offset the store gave entry index's batch.
func (p *Partition) BatchOffset(index uint64) (int64, error) {
	sh := p.sh
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if index <= sh.marker || index > sh.lastIndex() {
		return 0, fmt.Errorf("raftlog: shard %d: entry %d outside (%d, %d]", sh.id, index, sh.marker, sh.lastIndex())
	}
	e := &sh.ents[index-sh.marker-1]
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
// The caller has stopped serving reads from the old log.
// It returns the log and the offset the snapshot's segments end at.
func (p *Partition) ReplaceLog(tmpDir string) (*segment.Log, int64, error) {
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
	sh.seg, sh.segBase, sh.awaiting = seg, seg.NextOffset(), false
	sh.meta.addInstalled(sh.marker, sh.segBase)
	for i := range sh.ents {
		e := &sh.ents[i]
		if !e.inSegment {
			stored, err := sh.storeBatch(e, sh.marker+1+uint64(i), e.cmd)
			if err != nil {
				return nil, 0, err
			}
			if stored {
				e.cmd = nil
			}
		}
		sh.meta.addEntry(sh.marker+1+uint64(i), e)
	}
	if err := sh.meta.flush(); err != nil {
		return nil, 0, err
	}
	if err := seg.SyncData(); err != nil {
		return nil, 0, err
	}
	sh.segDirty = false
	if err := sh.meta.sync(); err != nil {
		return nil, 0, err
	}
	return seg, sh.segBase, nil
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
