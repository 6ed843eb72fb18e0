package raftlog

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lni/dragonboat/v4/raftio"
	pb "github.com/lni/dragonboat/v4/raftpb"

	"github.com/sluicebroker/sluice/internal/kafkatest"
	"github.com/sluicebroker/sluice/segment"
)

const (
	testShard   = 1000
	testReplica = 1
)

// testStore is a store with one registered partition shard, reopenable like after a restart.
type testStore struct {
	t       *testing.T
	dir     string
	partDir string
	s       *Store
}

func newTestStore(t *testing.T) *testStore {
	dir := t.TempDir()
	ts := &testStore{t: t, dir: filepath.Join(dir, "raftlog"), partDir: filepath.Join(dir, "p-0")}
	ts.open()
	t.Cleanup(func() { ts.s.Close() })
	return ts
}

func (ts *testStore) open() {
	ts.t.Helper()
	s, err := Open(ts.dir, nil)
	if err != nil {
		ts.t.Fatal(err)
	}
	s.RegisterPartition(testShard, PartitionSpec{Dir: ts.partDir, Options: segment.Options{SegmentBytes: 4096}})
	ts.s = s
}

func (ts *testStore) reopen() {
	ts.t.Helper()
	if err := ts.s.Close(); err != nil {
		ts.t.Fatal(err)
	}
	ts.open()
}

// batchEntry is an entry as dragonboat proposes it: an encoded entry around a produce command.
func batchEntry(index, term uint64, values ...string) pb.Entry {
	vs := make([][]byte, len(values))
	for i, v := range values {
		vs[i] = []byte(v)
	}
	cmd := AppendCommand([]byte{encodedPlain}, Command{Epoch: int32(term), AppendTime: 1, Proposal: index}, kafkatest.Batch(vs...))
	return pb.Entry{Index: index, Term: term, Type: pb.EncodedEntry, Key: index * 7, Cmd: cmd}
}

func (ts *testStore) save(state pb.State, ents ...pb.Entry) {
	ts.t.Helper()
	if err := ts.s.SaveRaftState([]pb.Update{{ShardID: testShard, ReplicaID: testReplica, State: state, EntriesToSave: ents}}, 1); err != nil {
		ts.t.Fatal(err)
	}
}

func (ts *testStore) entries(low, high uint64) []pb.Entry {
	ts.t.Helper()
	ents, _, err := ts.s.IterateEntries(nil, 0, testShard, testReplica, low, high, 0)
	if err != nil {
		ts.t.Fatal(err)
	}
	return ents
}

func (ts *testStore) partition() *Partition {
	ts.t.Helper()
	p, err := ts.s.Partition(testShard, testReplica)
	if err != nil {
		ts.t.Fatal(err)
	}
	return p
}

// checkEntries compares what the store returns with what was saved: every Raft field and the
// command, whose batch comes back with its base offset and epoch set.
func (ts *testStore) checkEntries(want []pb.Entry, offsets []int64) {
	ts.t.Helper()
	got := ts.entries(want[0].Index, want[len(want)-1].Index+1)
	if len(got) != len(want) {
		ts.t.Fatalf("got %d entries, want %d", len(got), len(want))
	}
	p := ts.partition()
	for i := range want {
		g, w := got[i], want[i]
		if g.Index != w.Index || g.Term != w.Term || g.Type != w.Type || g.Key != w.Key {
			ts.t.Fatalf("entry %d: got %+v", w.Index, g)
		}
		_, wcmd, wenc := entryCommand(w.Type, w.Cmd)
		_, gcmd, genc := entryCommand(g.Type, g.Cmd)
		if !wenc || !genc {
			if !bytes.Equal(g.Cmd, w.Cmd) {
				ts.t.Fatalf("entry %d: command differs", w.Index)
			}
			continue
		}
		_, wb, _, wok := StoredBatch(wcmd)
		_, gb, gh, gok := StoredBatch(gcmd)
		if wok != gok {
			ts.t.Fatalf("entry %d: stored %v, want %v", w.Index, gok, wok)
		}
		if !wok {
			if !bytes.Equal(gcmd, wcmd) {
				ts.t.Fatalf("entry %d: inline command differs", w.Index)
			}
			continue
		}
		if !bytes.Equal(gb[16:], wb[16:]) || !bytes.Equal(gcmd[:HeaderLen], wcmd[:HeaderLen]) {
			ts.t.Fatalf("entry %d: batch differs", w.Index)
		}
		if gh.BaseOffset != offsets[i] || gh.PartitionLeaderEpoch != int32(w.Term) {
			ts.t.Fatalf("entry %d: base offset %d epoch %d, want %d and %d", w.Index, gh.BaseOffset, gh.PartitionLeaderEpoch, offsets[i], w.Term)
		}
		if off, err := p.BatchOffset(w.Index); err != nil || off != offsets[i] {
			ts.t.Fatalf("entry %d: BatchOffset %d, %v", w.Index, off, err)
		}
	}
}

func TestSaveIterateReopen(t *testing.T) {
	ts := newTestStore(t)
	noop := pb.Entry{Index: 1, Term: 1, Type: pb.ApplicationEntry}
	cc := pb.Entry{Index: 4, Term: 1, Type: pb.ConfigChangeEntry, Cmd: []byte("config change")}
	ents := []pb.Entry{noop, batchEntry(2, 1, "a", "b"), batchEntry(3, 1, "c"), cc, batchEntry(5, 1, "d", "e", "f")}
	st := pb.State{Term: 1, Vote: 1, Commit: 5}
	ts.save(st, ents...)
	offsets := []int64{0, 0, 2, 0, 3}
	ts.checkEntries(ents, offsets)
	if next := ts.partition().Log().NextOffset(); next != 6 {
		t.Fatalf("segment next offset %d, want 6", next)
	}

	ts.reopen()
	ts.checkEntries(ents, offsets)
	rs, err := ts.s.ReadRaftState(testShard, testReplica, 0)
	if err != nil || rs.State != st || rs.FirstIndex != 1 || rs.EntryCount != 5 {
		t.Fatalf("ReadRaftState = %+v, %v", rs, err)
	}
	// Entries after a snapshot's index only.
	if rs, _ := ts.s.ReadRaftState(testShard, testReplica, 3); rs.FirstIndex != 4 || rs.EntryCount != 2 {
		t.Fatalf("ReadRaftState after 3 = %+v", rs)
	}
	// A size limit returns at least one entry and stops after the one that crosses it.
	if got, _, _ := ts.s.IterateEntries(nil, 0, testShard, testReplica, 2, 6, 1); len(got) != 1 {
		t.Fatalf("maxSize 1: %d entries", len(got))
	}
}

// A batch appended in a later term than the one it was proposed in (a proposal still queued when
// its node's leadership ended, appended when it led again) takes no offsets: the next batch takes
// the offset it would have had, BatchOffset says ErrStaleBatch, and a restart keeps it that way.
func TestBatchOfAnEndedTermIsNotStored(t *testing.T) {
	ts := newTestStore(t)
	stale := batchEntry(3, 3, "queued in term 2")
	stale.Cmd = AppendCommand([]byte{encodedPlain}, Command{Epoch: 2, AppendTime: 1, Proposal: 9}, kafkatest.Batch([]byte("queued in term 2")))
	ents := []pb.Entry{batchEntry(1, 1, "a"), {Index: 2, Term: 3, Type: pb.ApplicationEntry}, stale, batchEntry(4, 3, "b", "c")}
	ts.save(pb.State{Term: 3, Vote: 1, Commit: 4}, ents...)
	check := func() {
		t.Helper()
		p := ts.partition()
		if _, err := p.BatchOffset(3); err != ErrStaleBatch {
			t.Fatalf("BatchOffset of the stale batch: %v, want ErrStaleBatch", err)
		}
		if off, err := p.BatchOffset(4); err != nil || off != 1 {
			t.Fatalf("BatchOffset after the stale batch = %d, %v; want 1", off, err)
		}
		if next := p.Log().NextOffset(); next != 3 {
			t.Fatalf("segment next offset %d, want 3", next)
		}
		// Raft still reads the entry back as it was proposed.
		got := ts.entries(3, 4)
		if len(got) != 1 || !bytes.Equal(got[0].Cmd, stale.Cmd) {
			t.Fatalf("entry 3 read back as %+v", got)
		}
	}
	check()
	ts.reopen()
	check()
}

func TestNoSavedLog(t *testing.T) {
	ts := newTestStore(t)
	if _, err := ts.s.ReadRaftState(testShard, testReplica, 0); err != raftio.ErrNoSavedLog {
		t.Fatalf("ReadRaftState on an empty shard: %v", err)
	}
	if _, err := ts.s.GetBootstrapInfo(testShard, testReplica); err != raftio.ErrNoBootstrapInfo {
		t.Fatalf("GetBootstrapInfo: %v", err)
	}
	bs := pb.Bootstrap{Addresses: map[uint64]string{1: "a:1", 2: "b:2"}, Type: pb.OnDiskStateMachine}
	if err := ts.s.SaveBootstrapInfo(testShard, testReplica, bs); err != nil {
		t.Fatal(err)
	}
	ts.reopen()
	got, err := ts.s.GetBootstrapInfo(testShard, testReplica)
	if err != nil || len(got.Addresses) != 2 || got.Type != pb.OnDiskStateMachine {
		t.Fatalf("GetBootstrapInfo = %+v, %v", got, err)
	}
	if ni, err := ts.s.ListNodeInfo(); err != nil || len(ni) != 1 || ni[0].ShardID != testShard || ni[0].ReplicaID != testReplica {
		t.Fatalf("ListNodeInfo = %v, %v", ni, err)
	}
}

// A new leader's entries override an uncommitted suffix: the suffix's batches leave the segment
// and the new ones take their offsets.
func TestOverwriteTruncatesSegment(t *testing.T) {
	ts := newTestStore(t)
	old := []pb.Entry{batchEntry(1, 1, "a"), batchEntry(2, 1, "b", "c"), batchEntry(3, 1, "d"), batchEntry(4, 1, "e")}
	ts.save(pb.State{Term: 1, Vote: 1, Commit: 2}, old...)
	repl := []pb.Entry{{Index: 3, Term: 2, Type: pb.ApplicationEntry}, batchEntry(4, 2, "x", "y", "z")}
	ts.save(pb.State{Term: 2, Vote: 2, Commit: 2}, repl...)
	want := append(append([]pb.Entry{}, old[:2]...), repl...)
	offsets := []int64{0, 1, 0, 3}
	ts.checkEntries(want, offsets)
	if next := ts.partition().Log().NextOffset(); next != 6 {
		t.Fatalf("segment next offset %d, want 6", next)
	}
	ts.reopen()
	ts.checkEntries(want, offsets)
	if next := ts.partition().Log().NextOffset(); next != 6 {
		t.Fatalf("after reopen: segment next offset %d, want 6", next)
	}
}

// A crash between the writes: the segment or the metadata may hold more than the other. Whichever
// is ahead is cut back; the state's commit never points past the entries kept.
func TestRecoveryCutsTheLonger(t *testing.T) {
	t.Run("metadata ahead", func(t *testing.T) {
		ts := newTestStore(t)
		ents := []pb.Entry{batchEntry(1, 1, "a"), batchEntry(2, 1, "b"), batchEntry(3, 1, "c")}
		ts.save(pb.State{Term: 1, Vote: 1, Commit: 3}, ents...)
		ts.s.Close()
		// Lose the last batch from the segment (its file is cut back as a crash would leave it).
		onlySegment(t, ts.partDir)
		log, err := segment.Open(ts.partDir, segment.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := log.TruncateTo(2); err != nil {
			t.Fatal(err)
		}
		log.Close()
		ts.open()
		got := ts.entries(1, 4)
		if len(got) != 2 {
			t.Fatalf("%d entries after recovery, want 2", len(got))
		}
		rs, _ := ts.s.ReadRaftState(testShard, testReplica, 0)
		if rs.State.Commit != 2 || rs.EntryCount != 2 {
			t.Fatalf("ReadRaftState = %+v", rs)
		}
	})
	t.Run("segment ahead", func(t *testing.T) {
		ts := newTestStore(t)
		ents := []pb.Entry{batchEntry(1, 1, "a"), batchEntry(2, 1, "b")}
		ts.save(pb.State{Term: 1, Vote: 1, Commit: 2}, ents...)
		// A batch reaches the segment, its metadata record never the file: it is entry 3 of term 1
		// (only a save puts batches there, in entry order). A batch whose epoch is past the Raft
		// state's term cannot be the next entry: it is cut.
		log := ts.partition().Log()
		if _, err := log.AppendWithEpoch(kafkatest.Batch([]byte("orphan")), 1); err != nil {
			t.Fatal(err)
		}
		if _, err := log.AppendWithEpoch(kafkatest.Batch([]byte("from a term never voted")), 5); err != nil {
			t.Fatal(err)
		}
		ts.reopen()
		if next := ts.partition().Log().NextOffset(); next != 3 {
			t.Fatalf("segment next offset %d after recovery, want 3", next)
		}
		ts.checkEntries(ents, []int64{0, 1})
		if got := ts.entries(3, 10); len(got) != 1 || got[0].Term != 1 {
			t.Fatalf("entries after recovery: %+v", got)
		}
	})
	t.Run("torn metadata record", func(t *testing.T) {
		ts := newTestStore(t)
		ts.save(pb.State{Term: 1, Vote: 1, Commit: 1}, batchEntry(1, 1, "a"))
		ts.save(pb.State{Term: 1, Vote: 1, Commit: 2}, batchEntry(2, 1, "b"))
		ts.s.Close()
		// Garble the last record's bytes.
		meta := filepath.Join(ts.dir, "shards", fmt.Sprint(testShard), fmt.Sprintf("%016d%s", 1, metaSuffix))
		data, err := os.ReadFile(meta)
		if err != nil {
			t.Fatal(err)
		}
		end := scanRecords(data, func([]byte) error { return nil })
		data[end-3] ^= 0xff
		if err := os.WriteFile(meta, data, 0o644); err != nil {
			t.Fatal(err)
		}
		ts.open()
		rs, _ := ts.s.ReadRaftState(testShard, testReplica, 0)
		if rs.EntryCount != 2 && rs.EntryCount != 1 {
			t.Fatalf("ReadRaftState = %+v", rs)
		}
		// The last record was the state: entry 2 stays (its batch is there), commit falls back.
		if rs.State.Commit > uint64(rs.EntryCount) {
			t.Fatalf("commit %d past %d entries", rs.State.Commit, rs.EntryCount)
		}
		if next := ts.partition().Log().NextOffset(); next != int64(rs.EntryCount) {
			t.Fatalf("segment next offset %d, %d entries", next, rs.EntryCount)
		}
	})
}

func onlySegment(t *testing.T, dir string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	if len(m) == 0 {
		t.Fatal("no segment")
	}
	return m[len(m)-1]
}

// Compaction drops entries (not their batches), and the metadata file is rewritten once it is
// mostly dead records; a reopen sees the same live entries.
func TestCompactionAndRotation(t *testing.T) {
	ts := newTestStore(t)
	var all []pb.Entry
	var offsets []int64
	index := uint64(0)
	for round := 0; round < 40; round++ {
		var ents []pb.Entry
		for i := 0; i < 100; i++ {
			index++
			ents = append(ents, batchEntry(index, 1, "value"))
			offsets = append(offsets, int64(index-1))
		}
		ts.save(pb.State{Term: 1, Vote: 1, Commit: index}, ents...)
		all = append(all, ents...)
		if err := ts.s.RemoveEntriesTo(testShard, testReplica, index-50); err != nil {
			t.Fatal(err)
		}
	}
	seqs, err := listMeta(ts.s.metaDir(testShard))
	if err != nil || len(seqs) != 1 || seqs[0] == 1 {
		t.Fatalf("metadata files %v, %v: want one, rotated", seqs, err)
	}
	if got := ts.entries(index-60, index); len(got) != 0 {
		t.Fatalf("compacted entries returned: %d", len(got))
	}
	ts.checkEntries(all[len(all)-50:], offsets[len(offsets)-50:])
	if floor := ts.partition().RetentionFloor(); floor != offsets[len(offsets)-50] {
		t.Fatalf("retention floor %d, want %d", floor, offsets[len(offsets)-50])
	}
	ts.reopen()
	ts.checkEntries(all[len(all)-50:], offsets[len(offsets)-50:])
	if next := ts.partition().Log().NextOffset(); next != int64(index) {
		t.Fatalf("segment next offset %d, want %d", next, index)
	}
	// Everything compacted: the segment's end is still known after a reopen.
	if err := ts.s.RemoveEntriesTo(testShard, testReplica, index); err != nil {
		t.Fatal(err)
	}
	ts.reopen()
	if next := ts.partition().Log().NextOffset(); next != int64(index) {
		t.Fatalf("fully compacted: segment next offset %d, want %d", next, index)
	}
	next := batchEntry(index+1, 1, "after")
	ts.save(pb.State{Term: 1, Vote: 1, Commit: index + 1}, next)
	ts.checkEntries([]pb.Entry{next}, []int64{int64(index)})
}

// A follower far behind receives a snapshot: its entries go, the batches saved after it wait
// inline until the state machine installs the snapshot's segments, then take offsets after them.
func TestReceivedSnapshotAndReplaceLog(t *testing.T) {
	ts := newTestStore(t)
	ts.save(pb.State{Term: 1, Vote: 1, Commit: 2}, batchEntry(1, 1, "stale"), batchEntry(2, 1, "stale"))
	ss := pb.Snapshot{Index: 10, Term: 2, Type: pb.OnDiskStateMachine, Membership: pb.Membership{Addresses: map[uint64]string{1: "a"}}}
	if err := ts.s.SaveRaftState([]pb.Update{{ShardID: testShard, ReplicaID: testReplica, Snapshot: ss,
		State: pb.State{Term: 2, Vote: 2, Commit: 10}}}, 1); err != nil {
		t.Fatal(err)
	}
	after := []pb.Entry{batchEntry(11, 2, "n1"), batchEntry(12, 2, "n2", "n3")}
	ts.save(pb.State{Term: 2, Vote: 2, Commit: 12}, after...)
	if _, err := ts.partition().BatchOffset(11); err != ErrNoBatch {
		t.Fatalf("before the install: BatchOffset = %v, want ErrNoBatch", err)
	}
	// A restart before the install keeps waiting for it.
	ts.reopen()
	if _, err := ts.partition().BatchOffset(11); err != ErrNoBatch {
		t.Fatalf("after a restart before the install: BatchOffset = %v", err)
	}
	if got, _ := ts.s.GetSnapshot(testShard, testReplica); got.Index != 10 {
		t.Fatalf("GetSnapshot index %d", got.Index)
	}

	// The snapshot's segments: 7 records ending at offset 7.
	tmp := ts.partDir + ".snapshot"
	log, err := segment.Open(tmp, segment.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 7; i++ {
		if _, err := log.Append(kafkatest.Batch([]byte("s"))); err != nil {
			t.Fatal(err)
		}
	}
	if err := log.Close(); err != nil {
		t.Fatal(err)
	}
	seg, base, err := ts.partition().ReplaceLog(tmp, 10)
	if err != nil || base != 7 || seg.NextOffset() != 10 {
		t.Fatalf("ReplaceLog: base %d, next %d, %v", base, seg.NextOffset(), err)
	}
	ts.checkEntries(after, []int64{7, 8})
	ts.reopen()
	ts.checkEntries(after, []int64{7, 8})
	if ts.partition().Log().NextOffset() != 10 {
		t.Fatalf("after reopen: next %d", ts.partition().Log().NextOffset())
	}
}

// Shards that are not registered partitions keep every command inline.
func TestInlineShard(t *testing.T) {
	ts := newTestStore(t)
	const ctl = 1
	e := batchEntry(1, 1, "looks like a batch")
	if err := ts.s.SaveRaftState([]pb.Update{{ShardID: ctl, ReplicaID: 1, State: pb.State{Term: 1, Commit: 1}, EntriesToSave: []pb.Entry{e}}}, 1); err != nil {
		t.Fatal(err)
	}
	ts.reopen()
	got, _, err := ts.s.IterateEntries(nil, 0, ctl, 1, 1, 2, 0)
	if err != nil || len(got) != 1 || !bytes.Equal(got[0].Cmd, e.Cmd) {
		t.Fatalf("inline entry: %v, %v", got, err)
	}
	if _, err := ts.s.Partition(ctl, 1); err == nil {
		t.Fatal("Partition of an unregistered shard succeeded")
	}
}

// Two snapshots sent in a row: Raft saves both before the state machine installs the first. The
// first's segments serve meanwhile; the entries after the second wait for it and then take
// offsets after its segments (the chaos run found them written after the first's).
func TestTwoSnapshotsInARow(t *testing.T) {
	ts := newTestStore(t)
	snap := func(index uint64) pb.Snapshot {
		return pb.Snapshot{Index: index, Term: 2, Type: pb.OnDiskStateMachine, Membership: pb.Membership{Addresses: map[uint64]string{1: "a"}}}
	}
	for _, index := range []uint64{10, 20} {
		if err := ts.s.SaveRaftState([]pb.Update{{ShardID: testShard, ReplicaID: testReplica, Snapshot: snap(index),
			State: pb.State{Term: 2, Vote: 2, Commit: index}}}, 1); err != nil {
			t.Fatal(err)
		}
	}
	after := []pb.Entry{batchEntry(21, 2, "n1")}
	ts.save(pb.State{Term: 2, Vote: 2, Commit: 21}, after...)
	install := func(index uint64, records int) int64 {
		t.Helper()
		tmp := ts.partDir + ".snapshot"
		log, err := segment.Open(tmp, segment.Options{})
		if err != nil {
			t.Fatal(err)
		}
		for range records {
			if _, err := log.Append(kafkatest.Batch([]byte("s"))); err != nil {
				t.Fatal(err)
			}
		}
		log.Close()
		_, base, err := ts.partition().ReplaceLog(tmp, index)
		if err != nil {
			t.Fatal(err)
		}
		return base
	}
	if base := install(10, 5); base != 5 {
		t.Fatalf("first snapshot ends at %d", base)
	}
	if _, err := ts.partition().BatchOffset(21); err != ErrNoBatch {
		t.Fatalf("after the older install: BatchOffset = %v, want ErrNoBatch (still waiting)", err)
	}
	ts.reopen()
	if _, err := ts.partition().BatchOffset(21); err != ErrNoBatch {
		t.Fatalf("after a restart: BatchOffset = %v, want ErrNoBatch", err)
	}
	if base := install(20, 9); base != 9 {
		t.Fatalf("second snapshot ends at %d", base)
	}
	ts.checkEntries(after, []int64{9})
	ts.reopen()
	ts.checkEntries(after, []int64{9})
}

// A snapshot Raft saved that dragonboat does not load (the state machine had applied every batch
// before it): the log as applied stays, its stale tail goes, and the batches saved after the
// snapshot follow it (the chaos run found them left inline).
func TestKeepLogThroughAnUnloadedSnapshot(t *testing.T) {
	ts := newTestStore(t)
	applied := []pb.Entry{batchEntry(1, 1, "a"), batchEntry(2, 1, "b", "c")}
	ts.save(pb.State{Term: 1, Vote: 1, Commit: 2}, append(applied, batchEntry(3, 1, "stale"))...)
	ss := pb.Snapshot{Index: 4, Term: 2, Type: pb.OnDiskStateMachine, Membership: pb.Membership{Addresses: map[uint64]string{1: "a"}}}
	if err := ts.s.SaveRaftState([]pb.Update{{ShardID: testShard, ReplicaID: testReplica, Snapshot: ss,
		State: pb.State{Term: 2, Vote: 2, Commit: 4}}}, 1); err != nil {
		t.Fatal(err)
	}
	after := []pb.Entry{batchEntry(5, 2, "n1")}
	ts.save(pb.State{Term: 2, Vote: 2, Commit: 5}, after...)
	if _, err := ts.partition().BatchOffset(5); err != ErrNoBatch {
		t.Fatalf("before: %v", err)
	}
	waited, err := ts.partition().KeepLog(3)
	if err != nil || !waited {
		t.Fatalf("KeepLog = %v, %v", waited, err)
	}
	ts.checkEntries(after, []int64{3})
	ts.reopen()
	ts.checkEntries(after, []int64{3})
	if b := ts.partition().Log().NextOffset(); b != 4 {
		t.Fatalf("log ends at %d, want 4 (the stale batch cut)", b)
	}
	if waited, _ := ts.partition().KeepLog(4); waited {
		t.Fatal("KeepLog when not waiting")
	}
}

// Records that only describe batches are not fsynced with every save (their batches are): after a
// power loss that kept the batches and lost those records, the entries come back from the segment,
// with their terms, offsets and commands, and the log goes on from them.
func TestRecordsLostWithThePageCacheAreRebuilt(t *testing.T) {
	ts := newTestStore(t)
	first := []pb.Entry{batchEntry(1, 2, "a"), batchEntry(2, 2, "b", "c")}
	ts.save(pb.State{Term: 2, Vote: 1, Commit: 1}, first...) // a new term: its records are made durable
	meta := filepath.Join(ts.dir, "shards", fmt.Sprint(testShard), fmt.Sprintf("%016d%s", 1, metaSuffix))
	data, err := os.ReadFile(meta)
	if err != nil {
		t.Fatal(err)
	}
	durable := scanRecords(data, func([]byte) error { return nil })
	later := []pb.Entry{batchEntry(3, 2, "d"), batchEntry(4, 2, "e", "f", "g")}
	ts.save(pb.State{Term: 2, Vote: 1, Commit: 3}, later...)
	ts.s.Close()

	// The power loss: the metadata file keeps only what the first save made durable.
	if data, err = os.ReadFile(meta); err != nil {
		t.Fatal(err)
	}
	clear(data[durable:])
	if err := os.WriteFile(meta, data, 0o644); err != nil {
		t.Fatal(err)
	}
	ts.open()
	ts.checkEntries(first, []int64{0, 1})
	got := ts.entries(3, 5)
	if len(got) != 2 {
		t.Fatalf("%d entries rebuilt, want 2", len(got))
	}
	p := ts.partition()
	for i, want := range later {
		g := got[i]
		_, gcmd, ok := entryCommand(g.Type, g.Cmd)
		if !ok || g.Index != want.Index || g.Term != want.Term {
			t.Fatalf("rebuilt entry %d: %+v", want.Index, g)
		}
		c, gb, gh, ok := StoredBatch(gcmd)
		_, wcmd, _ := entryCommand(want.Type, want.Cmd)
		_, wb, _, _ := StoredBatch(wcmd)
		if !ok || c.Kind != KindBatch || c.Epoch != 2 || c.AppendTime != 1 || !bytes.Equal(gb[16:], wb[16:]) {
			t.Fatalf("rebuilt entry %d: command %+v, batch equal %v", want.Index, c, bytes.Equal(gb[16:], wb[16:]))
		}
		wantOff := []int64{3, 4}[i]
		if gh.BaseOffset != wantOff || gh.PartitionLeaderEpoch != 2 {
			t.Fatalf("rebuilt entry %d: offset %d epoch %d", want.Index, gh.BaseOffset, gh.PartitionLeaderEpoch)
		}
		if off, err := p.BatchOffset(want.Index); err != nil || off != wantOff {
			t.Fatalf("rebuilt entry %d: BatchOffset %d, %v", want.Index, off, err)
		}
	}
	// The log goes on after them, and the rebuilt records survive a clean restart.
	next := batchEntry(5, 2, "h")
	ts.save(pb.State{Term: 2, Vote: 1, Commit: 5}, next)
	ts.reopen()
	ts.checkEntries([]pb.Entry{next}, []int64{7})
	if rs, _ := ts.s.ReadRaftState(testShard, testReplica, 0); rs.EntryCount != 5 {
		t.Fatalf("ReadRaftState = %+v", rs)
	}
}

// What the segment cannot tell again is durable before any later batch reaches the segment: an
// entry without a batch, a new term or vote, an overridden suffix. Batches alone do not wait for
// the metadata's fsync.
func TestMetadataDurableBeforeLaterBatches(t *testing.T) {
	ts := newTestStore(t)
	var dirty []bool
	testHookBeforeBatch = func(sh *shard) { dirty = append(dirty, sh.meta.dirty) }
	defer func() { testHookBeforeBatch = nil }()
	barrier := pb.Entry{Index: 2, Term: 1, Type: pb.EncodedEntry,
		Cmd: AppendCommand([]byte{encodedPlain}, Command{Kind: KindBarrier, Epoch: 1}, nil)}
	check := func(what string, want bool) {
		t.Helper()
		if len(dirty) != 1 || dirty[0] != want {
			t.Fatalf("%s: metadata unsynced when the batch was written: %v, want %v", what, dirty, want)
		}
		dirty = dirty[:0]
	}
	ts.save(pb.State{Term: 1, Vote: 1}, batchEntry(1, 1, "a"))
	check("new term", false)
	ts.save(pb.State{Term: 1, Vote: 1, Commit: 1}, barrier, batchEntry(3, 1, "b"))
	check("after an inline entry", false)
	ts.save(pb.State{Term: 1, Vote: 1, Commit: 3}, batchEntry(4, 1, "c"))
	check("batch alone", true)
	ts.save(pb.State{Term: 2, Vote: 2, Commit: 3}, batchEntry(4, 2, "d"))
	check("overridden suffix in a new term", false)
}

// A metadata sync due only by age (metaSyncMaxAge) does not hold the shard while it waits for the
// disk: the state machine's BatchOffset, called for every entry it applies, goes on meanwhile, and
// the file is clean afterwards. (Held, the apply of entries already durable waited for the next
// save's fsyncs: results/2026-12-07-2core-vm-stall21, cause 3.)
func TestPeriodicMetadataSyncDoesNotHoldTheShard(t *testing.T) {
	ts := newTestStore(t)
	ts.save(pb.State{Term: 1, Vote: 1}, batchEntry(1, 1, "a")) // a new term: synced under the lock
	ts.save(pb.State{Term: 1, Vote: 1, Commit: 1}, batchEntry(2, 1, "b"))
	time.Sleep(metaSyncMaxAge + 10*time.Millisecond)
	p := ts.partition()
	var during error
	hooked := false
	testHookDuringSync = func() {
		hooked = true
		done := make(chan error, 1)
		go func() {
			_, err := p.BatchOffset(2)
			done <- err
		}()
		select {
		case during = <-done:
		case <-time.After(2 * time.Second):
			during = errors.New("BatchOffset blocked while the metadata was being synced")
		}
	}
	defer func() { testHookDuringSync = nil }()
	ts.save(pb.State{Term: 1, Vote: 1, Commit: 2}, batchEntry(3, 1, "c")) // due by age only
	testHookDuringSync = nil
	if !hooked || during != nil {
		t.Fatalf("sync hook ran %v: %v", hooked, during)
	}
	p.sh.mu.Lock()
	dirty := p.sh.meta.dirty
	p.sh.mu.Unlock()
	if dirty {
		t.Fatal("the metadata file is still marked unsynced after its sync")
	}
}

// TestStateChangeDurableOnReturn: a save holding only a new term or vote (no batch, so nothing
// synced before batches are written) has its metadata fsynced before SaveRaftState returns, also
// when the file's descriptor went back to the descriptor cache after the write.
func TestStateChangeDurableOnReturn(t *testing.T) {
	ts := newTestStore(t)
	ts.save(pb.State{Term: 1, Vote: 1}, batchEntry(1, 1, "a"))
	for _, st := range []pb.State{{Term: 2, Vote: 1, Commit: 1}, {Term: 2, Vote: 2, Commit: 1}, {Term: 3, Vote: 0, Commit: 1}} {
		ts.save(st)
		sh, err := ts.s.shard(testShard, testReplica)
		if err != nil {
			t.Fatal(err)
		}
		sh.mu.Lock()
		dirty, must := sh.meta.dirty, sh.metaMust
		sh.mu.Unlock()
		if dirty || must {
			t.Fatalf("state %+v: metadata unsynced after SaveRaftState returned (dirty %v, must %v)", st, dirty, must)
		}
	}
}
