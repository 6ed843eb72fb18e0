// Package raftlog is Sluice's Raft log store: dragonboat's LogDB (raftio.ILogDB) written so that a
// partition's segment files are its Raft log. A produced batch is written once, into the segment,
// with its final base offset and leader epoch (both follow from the log before it, so every replica
// writes the same bytes), fsynced once per save, and later served by sendfile from the same place.
// Beside it, a small metadata file per shard holds the Raft state and each entry's Raft fields and
// position; entries without a batch (elections, membership changes, the controller group) are kept
// whole in that file.
//
// A partition shard must be registered (RegisterPartition) before its replica starts; any other
// shard keeps every command inline. The replica's state machine reaches its partition's log through
// Partition: it applies committed entries by their offsets instead of writing them again.
package raftlog

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lni/dragonboat/v4/config"
	"github.com/lni/dragonboat/v4/raftio"
	pb "github.com/lni/dragonboat/v4/raftpb"

	"github.com/sluicebroker/sluice/internal/diskio"
	"github.com/sluicebroker/sluice/internal/fdcache"
	"github.com/sluicebroker/sluice/metrics"
	"github.com/sluicebroker/sluice/segment"
)

// Name is the LogDB type dragonboat records in its directory: a directory written with another
// LogDB is refused at start.
const Name = "sluice-segment"

// binaryFormat is this package's on-disk format version.
const binaryFormat = 1

// PartitionSpec says where a partition shard's segment lives.
type PartitionSpec struct {
	Dir     string
	Options segment.Options
}

// Store implements raftio.ILogDB over per-shard metadata files and partition segments.
type Store struct {
	dir    string
	logger *slog.Logger

	mu     sync.Mutex
	specs  map[uint64]PartitionSpec
	shards map[uint64]*shard
	closed bool
}

var _ raftio.ILogDB = (*Store)(nil)

// Open opens (or creates) a store in dir.
func Open(dir string, logger *slog.Logger) (*Store, error) {
	if logger == nil {
		logger = slog.Default()
	}
	for _, d := range []string{dir, filepath.Join(dir, "bootstrap"), filepath.Join(dir, "shards")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	return &Store{dir: dir, logger: logger.With("component", "raftlog"), specs: map[uint64]PartitionSpec{}, shards: map[uint64]*shard{}}, nil
}

// Factory returns a dragonboat LogDB factory that hands out this store.
func (s *Store) Factory() config.LogDBFactory { return factory{s} }

type factory struct{ s *Store }

func (f factory) Create(config.NodeHostConfig, config.LogDBCallback, []string, []string) (raftio.ILogDB, error) {
	return f.s, nil
}

func (f factory) Name() string { return Name }

// RegisterPartition makes shardID a partition shard whose batches live in spec.Dir. Call it
// before the shard's replica starts.
func (s *Store) RegisterPartition(shardID uint64, spec PartitionSpec) {
	s.mu.Lock()
	s.specs[shardID] = spec
	s.mu.Unlock()
}

// Open opens a registered shard's files now (its metadata, and its segment, recovered and
// reconciled): dragonboat's first read of a shard opens them otherwise, while it holds its
// NodeHost-wide lock, one shard at a time. Safe to call concurrently for different shards, and
// again (a no-op once open).
func (s *Store) Open(shardID, replicaID uint64) error {
	_, err := s.shard(shardID, replicaID)
	return err
}

// Name implements raftio.ILogDB.
func (s *Store) Name() string { return Name }

// BinaryFormat implements raftio.ILogDB.
func (s *Store) BinaryFormat() uint32 { return binaryFormat }

// Close closes every shard's files (segments included).
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var err error
	for _, sh := range s.shards {
		sh.mu.Lock()
		if sh.meta == nil { // never opened
			sh.mu.Unlock()
			continue
		}
		if e := errors.Join(sh.meta.flush(), sh.meta.sync()); e != nil && err == nil {
			err = e
		}
		if e := sh.meta.close(); e != nil && err == nil {
			err = e
		}
		if sh.seg != nil {
			if e := sh.seg.Close(); e != nil && !errors.Is(e, segment.ErrClosed) && err == nil {
				err = e
			}
			sh.seg = nil
		}
		sh.mu.Unlock()
	}
	return err
}

func (s *Store) metaDir(shardID uint64) string {
	return filepath.Join(s.dir, "shards", strconv.FormatUint(shardID, 10))
}

// shard returns the open shard, opening it (and recovering it) on first use. Shards open in
// parallel: a broker restarting with many partitions recovers their segments side by side.
func (s *Store) shard(shardID, replicaID uint64) (*shard, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, errors.New("raftlog: closed")
	}
	sh := s.shards[shardID]
	if sh == nil {
		sh = &shard{id: shardID, replica: replicaID, logger: s.logger.With("shard", shardID)}
		if spec, ok := s.specs[shardID]; ok {
			sh.part = &spec
		}
		s.shards[shardID] = sh
	}
	s.mu.Unlock()
	sh.opening.Do(func() { sh.openErr = sh.open(s.metaDir(shardID)) })
	if sh.openErr != nil {
		s.mu.Lock()
		if s.shards[shardID] == sh {
			delete(s.shards, shardID) // the next call tries again
		}
		s.mu.Unlock()
		return nil, sh.openErr
	}
	return sh, nil
}

// open reads the shard's metadata and, for a partition, opens and reconciles its segment.
func (sh *shard) open(metaDir string) error {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	meta, err := openMeta(metaDir, sh.replay)
	if err != nil {
		return fmt.Errorf("raftlog: open shard %d: %w", sh.id, err)
	}
	sh.meta = meta
	sh.liveBytes = meta.size()
	if sh.part == nil {
		return nil
	}
	seg, err := segment.Open(sh.part.Dir, sh.part.Options)
	if err != nil {
		meta.close()
		return fmt.Errorf("raftlog: open shard %d segment: %w", sh.id, err)
	}
	sh.seg = seg
	if err := sh.reconcile(); err != nil {
		seg.Close()
		meta.close()
		return err
	}
	return nil
}

// ListNodeInfo implements raftio.ILogDB: the replicas with bootstrap records.
func (s *Store) ListNodeInfo() ([]raftio.NodeInfo, error) {
	des, err := os.ReadDir(filepath.Join(s.dir, "bootstrap"))
	if err != nil {
		return nil, err
	}
	var out []raftio.NodeInfo
	for _, de := range des {
		shardID, replicaID, ok := parseBootstrapName(de.Name())
		if ok {
			out = append(out, raftio.NodeInfo{ShardID: shardID, ReplicaID: replicaID})
		}
	}
	return out, nil
}

func (s *Store) bootstrapPath(shardID, replicaID uint64) string {
	return filepath.Join(s.dir, "bootstrap", fmt.Sprintf("%d-%d.bootstrap", shardID, replicaID))
}

func parseBootstrapName(name string) (shardID, replicaID uint64, ok bool) {
	stem, ok := strings.CutSuffix(name, ".bootstrap")
	if !ok {
		return 0, 0, false
	}
	a, b, ok := strings.Cut(stem, "-")
	if !ok {
		return 0, 0, false
	}
	x, err1 := strconv.ParseUint(a, 10, 64)
	y, err2 := strconv.ParseUint(b, 10, 64)
	return x, y, err1 == nil && err2 == nil
}

// SaveBootstrapInfo implements raftio.ILogDB (a file per replica, replaced atomically).
func (s *Store) SaveBootstrapInfo(shardID, replicaID uint64, bs pb.Bootstrap) error {
	data, err := bs.Marshal()
	if err != nil {
		return err
	}
	return writeFileAtomic(s.bootstrapPath(shardID, replicaID), data)
}

// GetBootstrapInfo implements raftio.ILogDB.
func (s *Store) GetBootstrapInfo(shardID, replicaID uint64) (pb.Bootstrap, error) {
	data, err := os.ReadFile(s.bootstrapPath(shardID, replicaID))
	if errors.Is(err, os.ErrNotExist) {
		return pb.Bootstrap{}, raftio.ErrNoBootstrapInfo
	}
	if err != nil {
		return pb.Bootstrap{}, err
	}
	var bs pb.Bootstrap
	if err := bs.Unmarshal(data); err != nil {
		return pb.Bootstrap{}, fmt.Errorf("raftlog: bootstrap of shard %d: %w", shardID, err)
	}
	return bs, nil
}

func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := diskio.Datasync(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return diskio.SyncDir(filepath.Dir(path))
}

// SaveRaftState implements raftio.ILogDB: every update's batches go to their segments and its
// records to the metadata files, then the touched shards are fsynced (all their files in one
// diskio.DatasyncAll), and only then does it return, which is when dragonboat acknowledges.
func (s *Store) SaveRaftState(updates []pb.Update, workerID uint64) error {
	var toSync [8]*shard
	shards := toSync[:0]
	for i := range updates {
		u := &updates[i]
		sh, err := s.shard(u.ShardID, u.ReplicaID)
		if err != nil {
			return err
		}
		sh.mu.Lock()
		sync, err := sh.save(u)
		if err == nil {
			err = sh.meta.flush()
		}
		sh.mu.Unlock()
		if err != nil {
			return err
		}
		if sync && !slices.Contains(shards, sh) {
			shards = append(shards, sh)
		}
	}
	return syncShards(shards)
}

// testHookDuringSync, when set (tests), runs in syncShards just before the files are synced.
var testHookDuringSync func()

// metaSyncMaxAge bounds how long metadata records the segment could rebuild stay unsynced (save):
// after a power loss, a rebuilt entry's append time is its predecessor's (rebuild), this close.
const metaSyncMaxAge = 100 * time.Millisecond

// shardSync is one shard's part of a syncShards.
type shardSync struct {
	sh      *shard
	data    segment.DataSync
	dataAt  int // index of the segment's first file in the files synced; -1: none
	dataEnd int
	metaAt  int // index of the metadata file; -1: not synced (and the shard not held locked)
	// metaLocked: the metadata holds records that must be durable (metaMust), so the shard stays
	// locked until they are. A sync that is only due by age (metaSyncMaxAge) runs unlocked:
	// the apply path (BatchOffset) and readers need the lock, and would otherwise wait for this
	// save's fsyncs (results/2026-12-07-2core-vm-stall21, cause 3).
	metaLocked bool
	metaFile   *fdcache.File // the file synced (pinned meanwhile) and its end then: marked synced
	metaEnd    int64         // only if both still hold
}

// syncShards fsyncs what the shards wrote: each one's segment data and, when it must be or has
// waited long enough, its metadata file, all in one diskio.DatasyncAll (side by side: the save
// waits for the slowest, not the sum). A shard whose
// metadata must be durable stays locked until its sync is done, as when it was synced alone; one
// synced only because its records have waited metaSyncMaxAge is not held meanwhile.
func syncShards(shards []*shard) error {
	if len(shards) == 0 {
		return nil
	}
	var syncsBuf [8]shardSync
	var filesBuf [16]*os.File
	var errsBuf [16]error
	syncs, files := syncsBuf[:0], filesBuf[:0]
	var errs []error
	for _, sh := range shards {
		ss := shardSync{sh: sh, dataAt: -1, metaAt: -1}
		sh.mu.Lock()
		if sh.seg != nil && sh.segDirty {
			sh.segDirty = false
			ds, err := sh.seg.BeginSyncData()
			switch {
			case err == nil:
				ss.data, ss.dataAt = ds, len(files)
				files = ds.AppendFiles(files)
				ss.dataEnd = len(files)
			case !errors.Is(err, segment.ErrClosed):
				errs = append(errs, err)
			}
		}
		if sh.metaMust || sh.meta.unsyncedFor() >= metaSyncMaxAge {
			// The descriptor is pinned for the sync: flush gives it back to the descriptor cache
			// (fdcache), so the metadata's *os.File is nil between writes.
			if h := sh.meta.file; sh.meta.dirty && h != nil {
				f, err := h.Acquire()
				if err != nil {
					errs = append(errs, err)
				} else {
					ss.metaAt = len(files)
					files = append(files, f)
					ss.metaLocked, ss.metaFile, ss.metaEnd = sh.metaMust, h, sh.meta.end
				}
			} else {
				sh.metaMust = false
			}
		}
		if !ss.metaLocked {
			sh.mu.Unlock()
		}
		syncs = append(syncs, ss)
	}
	var fileErrs []error
	if len(files) <= len(errsBuf) {
		fileErrs = errsBuf[:len(files)]
	} else {
		fileErrs = make([]error, len(files))
	}
	if testHookDuringSync != nil {
		testHookDuringSync()
	}
	start := time.Now()
	diskio.DatasyncAll(files, fileErrs)
	metrics.SaveSyncSeconds.Observe(time.Since(start).Seconds())
	for i := range syncs {
		ss := &syncs[i]
		if ss.metaAt >= 0 {
			if !ss.metaLocked {
				ss.sh.mu.Lock()
			}
			if err := fileErrs[ss.metaAt]; err != nil {
				errs = append(errs, err)
			} else {
				ss.sh.meta.markSyncedTo(ss.metaFile, ss.metaEnd)
				if ss.metaLocked {
					ss.sh.metaMust = false
				}
			}
			ss.metaFile.Release()
			ss.sh.mu.Unlock()
		}
		if ss.dataAt >= 0 {
			err := ss.data.Done(errors.Join(fileErrs[ss.dataAt:ss.dataEnd]...))
			if err != nil && !errors.Is(err, segment.ErrClosed) {
				errs = append(errs, err)
			}
		}
	}
	clear(files)
	return errors.Join(errs...)
}

// markSyncedTo records that f was fsynced holding end bytes of records: the file is clean if it is
// still the current one and nothing was written to it since (else the next due sync covers it).
func (m *metaFile) markSyncedTo(f *fdcache.File, end int64) {
	if m.file == f && m.end == end {
		m.dirty = false
	}
}

// IterateEntries implements raftio.ILogDB.
func (s *Store) IterateEntries(ents []pb.Entry, size uint64, shardID, replicaID, low, high, maxSize uint64) ([]pb.Entry, uint64, error) {
	sh, err := s.shard(shardID, replicaID)
	if err != nil {
		return nil, 0, err
	}
	return sh.entries(ents, size, low, high, maxSize)
}

// ReadRaftState implements raftio.ILogDB: the state and the range of entries after lastIndex (the
// snapshot's index).
func (s *Store) ReadRaftState(shardID, replicaID, lastIndex uint64) (raftio.RaftState, error) {
	sh, err := s.shard(shardID, replicaID)
	if err != nil {
		return raftio.RaftState{}, err
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if pb.IsEmptyState(sh.state) && len(sh.ents) == 0 {
		return raftio.RaftState{}, raftio.ErrNoSavedLog
	}
	rs := raftio.RaftState{State: sh.state}
	if last := sh.lastIndex(); last > lastIndex && len(sh.ents) > 0 {
		first := max(lastIndex+1, sh.marker+1)
		rs.FirstIndex, rs.EntryCount = first, last-first+1
	}
	return rs, nil
}

// RemoveEntriesTo implements raftio.ILogDB: entries up to index are dropped from the metadata
// (their batches stay in the segment, which retention trims).
func (s *Store) RemoveEntriesTo(shardID, replicaID, index uint64) error {
	sh, err := s.shard(shardID, replicaID)
	if err != nil {
		return err
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if index <= sh.marker {
		return nil
	}
	if index > sh.lastIndex() {
		index = sh.lastIndex()
	}
	term := sh.markerTerm
	if index > sh.marker {
		term = sh.ents[index-sh.marker-1].term
	}
	sh.compact(index, term, sh.segBase)
	sh.meta.addCompacted(sh.marker, sh.markerTerm, sh.segBase)
	sh.liveBytes = 0
	for i := range sh.ents {
		sh.liveBytes += sh.ents[i].recordSize()
	}
	if sh.rotationDue() {
		return sh.rotate()
	}
	return sh.meta.flush()
}

// CompactEntriesTo implements raftio.ILogDB: RemoveEntriesTo already reclaimed the space.
func (s *Store) CompactEntriesTo(shardID, replicaID, index uint64) (<-chan struct{}, error) {
	ch := make(chan struct{}, 1)
	ch <- struct{}{}
	return ch, nil
}

// SaveSnapshots implements raftio.ILogDB: local snapshots' metadata.
func (s *Store) SaveSnapshots(updates []pb.Update) error {
	for i := range updates {
		u := &updates[i]
		if pb.IsEmptySnapshot(u.Snapshot) {
			continue
		}
		sh, err := s.shard(u.ShardID, u.ReplicaID)
		if err != nil {
			return err
		}
		sh.mu.Lock()
		if u.Snapshot.Index >= sh.snap.Index {
			sh.snap = u.Snapshot
		}
		err = sh.meta.addSnapshot(u.Snapshot, false)
		if err == nil {
			err = sh.meta.flush()
		}
		if err == nil {
			err = sh.meta.sync()
		}
		sh.mu.Unlock()
		if err != nil {
			return err
		}
	}
	return nil
}

// GetSnapshot implements raftio.ILogDB.
func (s *Store) GetSnapshot(shardID, replicaID uint64) (pb.Snapshot, error) {
	sh, err := s.shard(shardID, replicaID)
	if err != nil {
		return pb.Snapshot{}, err
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.snap, nil
}

// RemoveNodeData implements raftio.ILogDB: the replica's metadata and bootstrap record go (the
// partition's segment is the replica's to delete, with its directory).
func (s *Store) RemoveNodeData(shardID, replicaID uint64) error {
	s.mu.Lock()
	sh := s.shards[shardID]
	delete(s.shards, shardID)
	delete(s.specs, shardID)
	s.mu.Unlock()
	if sh != nil {
		sh.mu.Lock()
		if sh.meta != nil {
			sh.meta.close()
		}
		if sh.seg != nil {
			sh.seg.Close()
			sh.seg = nil
		}
		sh.mu.Unlock()
	}
	if err := os.RemoveAll(s.metaDir(shardID)); err != nil {
		return err
	}
	if err := os.Remove(s.bootstrapPath(shardID, replicaID)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return diskio.SyncDir(filepath.Join(s.dir, "bootstrap"))
}

// ImportSnapshot implements raftio.ILogDB (dragonboat's offline import tool): the replica restarts
// from the snapshot as a joining member.
func (s *Store) ImportSnapshot(ss pb.Snapshot, replicaID uint64) error {
	if err := s.SaveBootstrapInfo(ss.ShardID, replicaID, pb.Bootstrap{Join: true, Type: ss.Type}); err != nil {
		return err
	}
	sh, err := s.shard(ss.ShardID, replicaID)
	if err != nil {
		return err
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if err := sh.meta.addSnapshot(ss, true); err != nil {
		return err
	}
	sh.resetTo(ss)
	sh.state = pb.State{Term: ss.Term, Commit: ss.Index}
	sh.meta.addState(sh.state)
	if err := sh.meta.flush(); err != nil {
		return err
	}
	return sh.meta.sync()
}
