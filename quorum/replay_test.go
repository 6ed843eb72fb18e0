package quorum

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	sm "github.com/lni/dragonboat/v4/statemachine"
)

// The controller group's Raft log and snapshots on disk hold the controller commands' JSON. A data
// directory written by an older build must replay to the same Metadata, so these tests pin the wire:
//
//   - testdata/controller-log.jsonl: one entry per line, every op, the bytes the proposer encoded
//     (written once by the untyped command code of e60002f; append lines for new ops, never rewrite
//     old ones: a rewritten line hides a wire change);
//   - testdata/controller-snapshot.json: SaveSnapshot's bytes after the first replaySnapshotAt entries;
//   - testdata/controller-replay.golden: each entry's result, then the final snapshot.
var writeControllerTestdata = flag.Bool("write-controller-testdata", false, "rewrite quorum/testdata/controller-* from the current code")

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
func replayLog() []command {
	name := func(s string) *string { return &s }
	cred := ScramCredential{Mechanism: "SCRAM-SHA-256", Iterations: 4096, Salt: []byte("salt"), StoredKey: []byte("stored"), ServerKey: []byte("server")}
	cred512 := ScramCredential{Mechanism: "SCRAM-SHA-512", Iterations: 8192, Salt: []byte("salt5"), StoredKey: []byte("stored5"), ServerKey: []byte("server5")}
	acl := ACL{ResourceType: 2, ResourceName: "orders", PatternType: PatternLit, Principal: "User:alice", Host: "*", Operation: 3, Permission: 3}
	aclPre := ACL{ResourceType: 2, ResourceName: "ord", PatternType: PatternPre, Principal: "User:bob", Host: "*", Operation: 2, Permission: 3}
	return []command{
		{Op: opBootstrap, ClusterID: "AAAAAAAAAAAAAAAAAAAAAA"},
		{Op: opBootstrap, ClusterID: "BBBBBBBBBBBBBBBBBBBBBB"}, // ignored: the first wins
		{Op: opRegisterBroker, Broker: &BrokerInfo{NodeID: 1, Host: "127.0.0.1", Port: 9092, RaftAddr: "127.0.0.1:7001"}},
		{Op: opRegisterBroker, Broker: &BrokerInfo{NodeID: 2, Host: "127.0.0.1", Port: 9093, Rack: "r2", RaftAddr: "127.0.0.1:7002", TLSPort: 9193}},
		{Op: opRegisterBroker, Broker: &BrokerInfo{NodeID: 3, Host: "127.0.0.1", Port: 9094, RaftAddr: "127.0.0.1:7003"}},
		{Op: opRegisterBroker, Broker: &BrokerInfo{NodeID: 3, Host: "127.0.0.1", Port: 9094, RaftAddr: "127.0.0.1:7003"}}, // unchanged
		{Op: opCreateTopic, Spec: &TopicSpec{Name: "orders", Partitions: 3, ReplicationFactor: 2, Configs: map[string]string{"retention.ms": "1000"}}, TopicID: replayTopicID(1)},
		{Op: opCreateTopic, Spec: &TopicSpec{Name: "orders", Partitions: 1, ReplicationFactor: 1}, TopicID: replayTopicID(2)},
		{Op: opCreateTopic, Spec: &TopicSpec{Name: "wide", Partitions: 1, ReplicationFactor: 4}, TopicID: replayTopicID(3)},
		{Op: opCreateTopic, Spec: &TopicSpec{Name: "manual", Partitions: 2, ReplicationFactor: 2, Assignment: [][]int32{{3, 1}, {2, 3}}}, TopicID: replayTopicID(4)},
		{Op: opCreateTopic, Spec: &TopicSpec{Name: "__consumer_offsets", Partitions: 2, ReplicationFactor: 1, Internal: true, Configs: map[string]string{"cleanup.policy": "compact"}}, TopicID: replayTopicID(5)},
		{Op: opCreateTopic, Spec: &TopicSpec{Name: "badmanual", Partitions: 1, ReplicationFactor: 2, Assignment: [][]int32{{1, 9}}}, TopicID: replayTopicID(6)},
		// the snapshot file is taken here (replaySnapshotAt)
		{Op: opCreatePartitions, Name: "orders", Count: 5},
		{Op: opCreatePartitions, Name: "orders", Count: 4},
		{Op: opCreatePartitions, Name: "manual", Count: 3, Assignment: [][]int32{{1, 2}}},
		{Op: opCreatePartitions, Name: "manual", Count: 5, Assignment: [][]int32{{1, 2}}},
		{Op: opCreatePartitions, Name: "nope", Count: 2},
		{Op: opAlterConfig, Name: "orders", Set: map[string]string{"segment.bytes": "1048576", "retention.ms": "2000"}, Remove: []string{"cleanup.policy"}},
		{Op: opAlterConfig, Name: "orders", Remove: []string{"retention.ms"}},
		{Op: opAlterConfig, Name: "nope", Set: map[string]string{"a": "b"}},
		{Op: opAllocateProducerIDs, N: 1000},
		{Op: opAllocateProducerIDs, N: 1000},
		{Op: opAllocateProducerIDs, N: 0},
		{Op: opHeartbeat, Node: 2, TimeMs: 1_700_000_000_000, Shards: []uint64{3, 4}},
		{Op: opHeartbeat, TimeMs: 1_700_000_000_000},
		{Op: opReportLeaders, Leaders: []LeaderReport{{ShardID: FirstPartitionShardID, Leader: 1, Epoch: 2}, {ShardID: FirstPartitionShardID + 1, Leader: 2, Epoch: 1}, {ShardID: 999_999, Leader: 1, Epoch: 1}}},
		{Op: opReportLeaders, Leaders: []LeaderReport{{ShardID: FirstPartitionShardID, Leader: 2, Epoch: 1}}}, // older: ignored
		{Op: opReportLeaders, Leaders: []LeaderReport{{ShardID: FirstPartitionShardID + 2, Leader: 3, Epoch: 5}}},
		{Op: opDeleteRecords, Name: "orders", Partition: 1, N: 42},
		{Op: opDeleteRecords, Name: "orders", Partition: 1, N: 7}, // never moves back
		{Op: opDeleteRecords, Name: "orders", Partition: 9, N: 7},
		{Op: opDeleteRecords, Name: "nope", N: 7},
		{Op: opReassign, Name: "orders", Partition: 0, Replicas: []int32{2, 3}},
		{Op: opReassign, Name: "orders", Partition: 0, Replicas: []int32{2, 2}},
		{Op: opReassign, Name: "orders", Partition: 0, Replicas: []int32{2, 8}},
		{Op: opReassign, Name: "orders", Partition: 1},
		{Op: opReassign, Name: "orders", Partition: 7, Replicas: []int32{1}},
		{Op: opReassignDone, Shards: []uint64{FirstPartitionShardID}, Replicas: []int32{2, 3}, Removed: []int32{1}},
		{Op: opReassignDone, Shards: []uint64{FirstPartitionShardID}, Replicas: []int32{2, 3}}, // repeated: nothing
		{Op: opReassignDone, Shards: []uint64{1, 2}},
		{Op: opReassign, Name: "orders", Partition: 0, Replicas: []int32{1, 2}}, // 1 left the group
		{Op: opReassign, Name: "orders", Partition: 2, Replicas: []int32{1, 2}},
		{Op: opReassign, Name: "orders", Partition: 2}, // cancel
		{Op: opScramUpsert, Sec: &securityCommand{User: "alice", Creds: []ScramCredential{cred}}},
		{Op: opScramUpsert, Sec: &securityCommand{User: "alice", Creds: []ScramCredential{cred512}, IfAbsent: true}}, // exists
		{Op: opScramUpsert, Sec: &securityCommand{User: "alice", Creds: []ScramCredential{cred512}}},
		{Op: opScramUpsert, Sec: &securityCommand{User: "bob", Creds: []ScramCredential{cred}}},
		{Op: opScramUpsert, Sec: &securityCommand{User: "carol"}},
		{Op: opScramUpsert},
		{Op: opScramDelete, Sec: &securityCommand{User: "alice", Mechanism: "SCRAM-SHA-256"}},
		{Op: opScramDelete, Sec: &securityCommand{User: "bob", Mechanism: "SCRAM-SHA-256"}},
		{Op: opScramDelete, Sec: &securityCommand{User: "bob", Mechanism: "SCRAM-SHA-256"}}, // notfound
		{Op: opCreateACLs, Sec: &securityCommand{ACLs: []ACL{acl, aclPre, acl}}},
		{Op: opCreateACLs, Sec: &securityCommand{ACLs: []ACL{acl}}},
		{Op: opDeleteACLs, Sec: &securityCommand{Filters: []ACLFilter{{ResourceType: 2, ResourceName: name("orders"), PatternType: PatternMatch, Operation: ACLAny, Permission: ACLAny}}}},
		{Op: opDeleteACLs, Sec: &securityCommand{Filters: []ACLFilter{{ResourceType: ACLAny, PatternType: ACLAny, Principal: name("User:nobody"), Operation: ACLAny, Permission: ACLAny}}}},
		{Op: opDeleteTopic, Name: "wide", TimeMs: 1_700_000_000_000},
		{Op: opDeleteTopic, Name: "__consumer_offsets", TimeMs: 1_700_000_030_000},
		{Op: opDeleteTopic, Name: "manual", TimeMs: 1_700_000_070_000}, // "__consumer_offsets" is still remembered, "wide" never existed
		{Op: opCreateTopic, Spec: &TopicSpec{Name: "__consumer_offsets", Partitions: 1, ReplicationFactor: 3}, TopicID: replayTopicID(7)},
		{Op: opDeleteTopic, Name: "manual", TimeMs: 1_700_000_080_000},
		{Op: "no_such_op"},
	}
}

// replayRaw adds the entries no proposer writes but a log may hold: a broken one is answered, not fatal.
var replayRaw = [][]byte{[]byte(`{"op":`), []byte(`[]`)}

func replayEntries(t *testing.T) [][]byte {
	t.Helper()
	path := filepath.Join("testdata", "controller-log.jsonl")
	if *writeControllerTestdata {
		var buf bytes.Buffer
		for _, cmd := range replayLog() {
			data, err := json.Marshal(cmd) // as Controller.propose encodes
			if err != nil {
				t.Fatal(err)
			}
			buf.Write(data)
			buf.WriteByte('\n')
		}
		for _, raw := range replayRaw {
			buf.Write(raw)
			buf.WriteByte('\n')
		}
		writeTestdata(t, path, buf.Bytes())
	}
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
	for i, cmd := range log {
		data, err := json.Marshal(cmd)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(data, entries[i]) {
			t.Errorf("entry %d encodes as\n%s\nthe log holds\n%s", i, data, entries[i])
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
