package raftlog

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	pb "github.com/lni/dragonboat/v4/raftpb"

	"github.com/sluicebroker/sluice/internal/fdcache"
	"github.com/sluicebroker/sluice/segment"
)

// metaDescriptors counts this process's descriptors on metadata files under dir.
func metaDescriptors(t *testing.T, dir string) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err == nil && strings.HasPrefix(target, dir) && strings.HasSuffix(target, metaSuffix) {
			n++
		}
	}
	return n
}

// TestMetaDescriptorsBounded: shards' metadata files share a bounded set of descriptors (issue 14:
// 10,000 partitions' files did not fit under the open files limit): with room for 4, 20 shards
// written in turn hold at most 4 open between saves, a shard whose file was closed writes again
// through a reopened one, and everything saved comes back after a restart.
func TestMetaDescriptorsBounded(t *testing.T) {
	if _, err := os.Stat("/proc/self/fd"); err != nil {
		t.Skip("no /proc/self/fd")
	}
	cache := fdcache.New(4)
	defer func(old func() *fdcache.Cache) { metaFiles = old }(metaFiles)
	metaFiles = func() *fdcache.Cache { return cache }

	dir := t.TempDir()
	const shards = 20
	open := func() *Store {
		s, err := Open(filepath.Join(dir, "raftlog"), nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := range shards {
			s.RegisterPartition(testShard+uint64(i), PartitionSpec{Dir: filepath.Join(dir, "p", string(rune('a'+i))),
				Options: segment.Options{SegmentBytes: 1 << 20}})
		}
		return s
	}
	s := open()
	save := func(index uint64) {
		t.Helper()
		for i := range shards {
			u := pb.Update{ShardID: testShard + uint64(i), ReplicaID: testReplica, State: pb.State{Term: 1, Vote: 1, Commit: index},
				EntriesToSave: []pb.Entry{batchEntry(index, 1, "v")}}
			if err := s.SaveRaftState([]pb.Update{u}, 1); err != nil {
				t.Fatal(err)
			}
		}
		if n := metaDescriptors(t, dir); n > cache.Limit() {
			t.Fatalf("%d metadata files open after saving entry %d to %d shards, want at most %d", n, index, shards, cache.Limit())
		}
	}
	save(1)
	save(2) // every shard's file was closed in between but the last few: reopened
	if _, reopens, _ := cache.Stats(); reopens < shards-int64(cache.Limit()) {
		t.Fatalf("%d reopens, want at least %d", reopens, shards-cache.Limit())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open()
	defer s.Close()
	for i := range shards {
		id := testShard + uint64(i)
		rs, err := s.ReadRaftState(id, testReplica, 0)
		if err != nil || rs.State.Commit != 2 || rs.FirstIndex != 1 || rs.EntryCount != 2 {
			t.Fatalf("shard %d after reopening: %+v, %v", id, rs, err)
		}
	}
	if n := metaDescriptors(t, dir); n > cache.Limit() {
		t.Fatalf("%d metadata files open after reopening %d shards, want at most %d", n, shards, cache.Limit())
	}
}
