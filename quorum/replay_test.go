package quorum

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	sm "github.com/lni/dragonboat/v4/statemachine"
)

// The controller group's Raft log and snapshots on disk hold the controller commands' JSON. A data
// directory written by an older build must replay to the same Metadata, so these tests pin the wire:
//
//   - testdata/controller-log.jsonl: one entry per line, every op, the bytes the proposer encoded
//     (written by the untyped command code of e60002f, commit 71f3a87; -write-controller-testdata
//     appends a new op's entries and never rewrites old ones: a rewritten line would hide a wire change);
//   - testdata/controller-snapshot.json: SaveSnapshot's bytes after the first replaySnapshotAt entries;
//   - testdata/controller-replay.golden: each entry's result, then the final snapshot.
var writeControllerTestdata = flag.Bool("write-controller-testdata", false, "append new commands to quorum/testdata/controller-log.jsonl, rewrite the snapshot and golden files")

// replaySnapshotAt is the entry count the snapshot file was taken after.
const replaySnapshotAt = 12

func replayTopicID(b byte) [16]byte {
	var id [16]byte
	for i := range id {
		id[i] = b + byte(i)
	}
	return id
}

// replayLog is the log: every op, with the outcomes worth pinning (errors included). Times are fixed
// (the heartbeat's is long past, so applying it changes nothing, as after a restart).
func replayLog() []controllerCommand {
	name := func(s string) *string { return &s }
	cred := ScramCredential{Mechanism: "SCRAM-SHA-256", Iterations: 4096, Salt: []byte("salt"), StoredKey: []byte("stored"), ServerKey: []byte("server")}
	cred512 := ScramCredential{Mechanism: "SCRAM-SHA-512", Iterations: 8192, Salt: []byte("salt5"), StoredKey: []byte("stored5"), ServerKey: []byte("server5")}
	acl := ACL{ResourceType: 2, ResourceName: "orders", PatternType: PatternLit, Principal: "User:alice", Host: "*", Operation: 3, Permission: 3}
	aclPre := ACL{ResourceType: 2, ResourceName: "ord", PatternType: PatternPre, Principal: "User:bob", Host: "*", Operation: 2, Permission: 3}
	return []controllerCommand{
		&bootstrapCmd{ClusterID: "AAAAAAAAAAAAAAAAAAAAAA"},
		&bootstrapCmd{ClusterID: "BBBBBBBBBBBBBBBBBBBBBB"}, // ignored: the first wins
		&registerBrokerCmd{Broker: &BrokerInfo{NodeID: 1, Host: "127.0.0.1", Port: 9092, RaftAddr: "127.0.0.1:7001"}},
		&registerBrokerCmd{Broker: &BrokerInfo{NodeID: 2, Host: "127.0.0.1", Port: 9093, Rack: "r2", RaftAddr: "127.0.0.1:7002", TLSPort: 9193}},
		&registerBrokerCmd{Broker: &BrokerInfo{NodeID: 3, Host: "127.0.0.1", Port: 9094, RaftAddr: "127.0.0.1:7003"}},
		&registerBrokerCmd{Broker: &BrokerInfo{NodeID: 3, Host: "127.0.0.1", Port: 9094, RaftAddr: "127.0.0.1:7003"}}, // unchanged
		&createTopicCmd{Spec: &TopicSpec{Name: "orders", Partitions: 3, ReplicationFactor: 2, Configs: map[string]string{"retention.ms": "1000"}}, TopicID: replayTopicID(1)},
		&createTopicCmd{Spec: &TopicSpec{Name: "orders", Partitions: 1, ReplicationFactor: 1}, TopicID: replayTopicID(2)},
		&createTopicCmd{Spec: &TopicSpec{Name: "wide", Partitions: 1, ReplicationFactor: 4}, TopicID: replayTopicID(3)},
		&createTopicCmd{Spec: &TopicSpec{Name: "manual", Partitions: 2, ReplicationFactor: 2, Assignment: [][]int32{{3, 1}, {2, 3}}}, TopicID: replayTopicID(4)},
		&createTopicCmd{Spec: &TopicSpec{Name: "__consumer_offsets", Partitions: 2, ReplicationFactor: 1, Internal: true, Configs: map[string]string{"cleanup.policy": "compact"}}, TopicID: replayTopicID(5)},
		&createTopicCmd{Spec: &TopicSpec{Name: "badmanual", Partitions: 1, ReplicationFactor: 2, Assignment: [][]int32{{1, 9}}}, TopicID: replayTopicID(6)},
		// the snapshot file is taken here (replaySnapshotAt)
		&createPartitionsCmd{Name: "orders", Count: 5},
		&createPartitionsCmd{Name: "orders", Count: 4},
		&createPartitionsCmd{Name: "manual", Count: 3, Assignment: [][]int32{{1, 2}}},
		&createPartitionsCmd{Name: "manual", Count: 5, Assignment: [][]int32{{1, 2}}},
		&createPartitionsCmd{Name: "nope", Count: 2},
		&alterConfigCmd{Name: "orders", Set: map[string]string{"segment.bytes": "1048576", "retention.ms": "2000"}, Remove: []string{"cleanup.policy"}},
		&alterConfigCmd{Name: "orders", Remove: []string{"retention.ms"}},
		&alterConfigCmd{Name: "nope", Set: map[string]string{"a": "b"}},
		&allocateProducerIDsCmd{N: 1000},
		&allocateProducerIDsCmd{N: 1000},
		&allocateProducerIDsCmd{N: 0},
		&heartbeatCmd{Node: 2, TimeMs: 1_700_000_000_000, Lagging: []uint64{3, 4}},
		&heartbeatCmd{TimeMs: 1_700_000_000_000},
		&reportLeadersCmd{Leaders: []LeaderReport{{ShardID: FirstPartitionShardID, Leader: 1, Epoch: 2}, {ShardID: FirstPartitionShardID + 1, Leader: 2, Epoch: 1}, {ShardID: 999_999, Leader: 1, Epoch: 1}}},
		&reportLeadersCmd{Leaders: []LeaderReport{{ShardID: FirstPartitionShardID, Leader: 2, Epoch: 1}}}, // older: ignored
		&reportLeadersCmd{Leaders: []LeaderReport{{ShardID: FirstPartitionShardID + 2, Leader: 3, Epoch: 5}}},
		&deleteRecordsCmd{Name: "orders", Partition: 1, Offset: 42},
		&deleteRecordsCmd{Name: "orders", Partition: 1, Offset: 7}, // never moves back
		&deleteRecordsCmd{Name: "orders", Partition: 9, Offset: 7},
		&deleteRecordsCmd{Name: "nope", Offset: 7},
		&reassignCmd{Name: "orders", Partition: 0, Target: []int32{2, 3}},
		&reassignCmd{Name: "orders", Partition: 0, Target: []int32{2, 2}},
		&reassignCmd{Name: "orders", Partition: 0, Target: []int32{2, 8}},
		&reassignCmd{Name: "orders", Partition: 1},
		&reassignCmd{Name: "orders", Partition: 7, Target: []int32{1}},
		&reassignDoneCmd{Shards: []uint64{FirstPartitionShardID}, Replicas: []int32{2, 3}, Removed: []int32{1}},
		&reassignDoneCmd{Shards: []uint64{FirstPartitionShardID}, Replicas: []int32{2, 3}}, // repeated: nothing
		&reassignDoneCmd{Shards: []uint64{1, 2}},
		&reassignCmd{Name: "orders", Partition: 0, Target: []int32{1, 2}}, // 1 left the group
		&reassignCmd{Name: "orders", Partition: 2, Target: []int32{1, 2}},
		&reassignCmd{Name: "orders", Partition: 2}, // cancel
		&scramUpsertCmd{Sec: &scramUpsertArgs{User: "alice", Creds: []ScramCredential{cred}}},
		&scramUpsertCmd{Sec: &scramUpsertArgs{User: "alice", Creds: []ScramCredential{cred512}, IfAbsent: true}}, // exists
		&scramUpsertCmd{Sec: &scramUpsertArgs{User: "alice", Creds: []ScramCredential{cred512}}},
		&scramUpsertCmd{Sec: &scramUpsertArgs{User: "bob", Creds: []ScramCredential{cred}}},
		&scramUpsertCmd{Sec: &scramUpsertArgs{User: "carol"}},
		&scramUpsertCmd{},
		&scramDeleteCmd{Sec: &scramDeleteArgs{User: "alice", Mechanism: "SCRAM-SHA-256"}},
		&scramDeleteCmd{Sec: &scramDeleteArgs{User: "bob", Mechanism: "SCRAM-SHA-256"}},
		&scramDeleteCmd{Sec: &scramDeleteArgs{User: "bob", Mechanism: "SCRAM-SHA-256"}}, // notfound
		&createACLsCmd{Sec: &createACLsArgs{ACLs: []ACL{acl, aclPre, acl}}},
		&createACLsCmd{Sec: &createACLsArgs{ACLs: []ACL{acl}}},
		&deleteACLsCmd{Sec: &deleteACLsArgs{Filters: []ACLFilter{{ResourceType: 2, ResourceName: name("orders"), PatternType: PatternMatch, Operation: ACLAny, Permission: ACLAny}}}},
		&deleteACLsCmd{Sec: &deleteACLsArgs{Filters: []ACLFilter{{ResourceType: ACLAny, PatternType: ACLAny, Principal: name("User:nobody"), Operation: ACLAny, Permission: ACLAny}}}},
		&deleteTopicCmd{Name: "wide", TimeMs: 1_700_000_000_000},
		&deleteTopicCmd{Name: "__consumer_offsets", TimeMs: 1_700_000_030_000},
		&deleteTopicCmd{Name: "manual", TimeMs: 1_700_000_070_000}, // "__consumer_offsets" is still remembered, "wide" never existed
		&createTopicCmd{Spec: &TopicSpec{Name: "__consumer_offsets", Partitions: 1, ReplicationFactor: 3}, TopicID: replayTopicID(7)},
		&deleteTopicCmd{Name: "manual", TimeMs: 1_700_000_080_000},
	}
}

// replayRaw adds the entries no proposer writes but a log may hold: an op this build does not know,
// broken ones. They are answered, not fatal.
var replayRaw = [][]byte{[]byte(`{"op":"no_such_op"}`), []byte(`{"op":`), []byte(`[]`)}

// replayEntries reads the log. With -write-controller-testdata it first appends the encoding of
// commands the file does not hold yet (a new op's); the lines it holds stay as they are.
func replayEntries(t *testing.T) [][]byte {
	t.Helper()
	path := filepath.Join("testdata", "controller-log.jsonl")
	entries := readLines(t, path)
	if *writeControllerTestdata {
		log := replayLog()
		held := len(entries) - len(replayRaw)
		if held > len(log) {
			t.Fatalf("the log holds %d commands, the test %d: never drop an entry", held, len(log))
		}
		var buf bytes.Buffer
		for _, e := range append(slices.Clone(entries[:held]), encodeAll(t, log[held:])...) {
			buf.Write(e)
			buf.WriteByte('\n')
		}
		for _, raw := range replayRaw {
			buf.Write(raw)
			buf.WriteByte('\n')
		}
		writeTestdata(t, path, buf.Bytes())
		entries = readLines(t, path)
	}
	return entries
}

func encodeAll(t *testing.T, cmds []controllerCommand) [][]byte {
	t.Helper()
	out := make([][]byte, len(cmds))
	for i, cmd := range cmds {
		data, err := encodeCommand(cmd)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = data
	}
	return out
}

func readLines(t *testing.T, path string) [][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out [][]byte
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		out = append(out, bytes.Clone(sc.Bytes()))
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func writeTestdata(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func newReplaySM() *controllerSM {
	return &controllerSM{c: &Controller{changed: make(chan struct{})}, md: emptyMetadata()}
}

func snapshotBytes(t *testing.T, s *controllerSM) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := s.SaveSnapshot(&buf, nil, nil); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// replayInto applies entries to s, one result line each ("index value data").
func replayInto(t *testing.T, s *controllerSM, first int, entries [][]byte) []byte {
	t.Helper()
	var out bytes.Buffer
	for i, e := range entries {
		res, err := s.Update(sm.Entry{Index: uint64(first + i + 1), Cmd: e})
		if err != nil {
			t.Fatalf("entry %d: %v", first+i, err)
		}
		fmt.Fprintf(&out, "%d %d %d %q\n", first+i, s.md.Version, res.Value, res.Data)
	}
	return out.Bytes()
}

// TestControllerLogEncoding: the proposer encodes every op as the log holds it.
func TestControllerLogEncoding(t *testing.T) {
	entries := replayEntries(t)
	log := replayLog()
	if len(entries) != len(log)+len(replayRaw) {
		t.Fatalf("testdata holds %d entries, the test %d", len(entries), len(log)+len(replayRaw))
	}
	for i, data := range encodeAll(t, log) {
		if !bytes.Equal(data, entries[i]) {
			t.Errorf("entry %d encodes as\n%s\nthe log holds\n%s", i, data, entries[i])
		}
		cmd, err := decodeCommand(entries[i])
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		if again, _ := encodeCommand(cmd); !bytes.Equal(again, entries[i]) {
			t.Errorf("entry %d decodes and encodes again as\n%s", i, again)
		}
	}
}

// TestControllerReplay: the log replays to the golden results and Metadata, from the start and from
// the snapshot.
func TestControllerReplay(t *testing.T) {
	entries := replayEntries(t)
	snapPath := filepath.Join("testdata", "controller-snapshot.json")
	goldenPath := filepath.Join("testdata", "controller-replay.golden")

	s := newReplaySM()
	results := replayInto(t, s, 0, entries[:replaySnapshotAt])
	mid := snapshotBytes(t, s)
	results = append(results, replayInto(t, s, replaySnapshotAt, entries[replaySnapshotAt:])...)
	got := append(results, snapshotBytes(t, s)...)
	if *writeControllerTestdata {
		writeTestdata(t, snapPath, mid)
		writeTestdata(t, goldenPath, got)
	}
	golden, err := os.ReadFile(goldenPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, golden) {
		t.Fatalf("replay from the start:\n%s\nwant\n%s", got, golden)
	}

	snap, err := os.ReadFile(snapPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(mid, snap) {
		t.Fatalf("snapshot after %d entries:\n%s\nthe file holds\n%s", replaySnapshotAt, mid, snap)
	}
	r := newReplaySM()
	if err := r.RecoverFromSnapshot(bytes.NewReader(snap), nil, nil); err != nil {
		t.Fatal(err)
	}
	if again := snapshotBytes(t, r); !bytes.Equal(again, snap) {
		t.Fatalf("snapshot recovered and saved again:\n%s\nwant\n%s", again, snap)
	}
	got = append(replayInto(t, r, replaySnapshotAt, entries[replaySnapshotAt:]), snapshotBytes(t, r)...)
	want := golden
	for range replaySnapshotAt { // the golden's lines after the snapshot's entries
		want = want[bytes.IndexByte(want, '\n')+1:]
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("replay from the snapshot:\n%s\nwant\n%s", got, want)
	}
}
