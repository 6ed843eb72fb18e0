package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestGroupsCLI runs `sluice groups` against a broker: list, describe with lag (table and JSON),
// reset-offsets (dry run, execute, refused while the group is active) and delete.
func TestGroupsCLI(t *testing.T) {
	b := startBroker(t)
	const topic, group = "cli-topic", "cli-group"
	b.createTopic(topic, 2, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	prod := b.client(kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for i := range 10 {
		if err := prod.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: int32(i % 2), Value: []byte(fmt.Sprint(i))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	offs := kadm.Offsets{}
	offs.Add(kadm.Offset{Topic: topic, Partition: 0, At: 3, LeaderEpoch: -1})
	offs.Add(kadm.Offset{Topic: topic, Partition: 1, At: 0, LeaderEpoch: -1})
	if resp, err := b.admin().CommitOffsets(ctx, group, offs); err != nil || resp.Error() != nil {
		t.Fatalf("commit: %v %v", err, resp.Error())
	}

	run := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := groups(append([]string{"--bootstrap", b.Addr}, args...), &out)
		return out.String(), err
	}
	mustRun := func(args ...string) string {
		t.Helper()
		out, err := run(args...)
		if err != nil {
			t.Fatalf("sluice groups %v: %v\n%s", args, err, out)
		}
		return out
	}
	describe := func() groupDescription {
		t.Helper()
		var d groupDescription
		if err := json.Unmarshal([]byte(mustRun("describe", group, "--json")), &d); err != nil {
			t.Fatal(err)
		}
		return d
	}

	if out := mustRun("list"); !strings.Contains(out, group) || !strings.Contains(out, "Empty") {
		t.Fatalf("groups list:\n%s", out)
	}
	d := describe()
	if d.State != "Empty" || d.TotalLag != 7 || len(d.Partitions) != 2 || d.Partitions[0].CurrentOffset != 3 || d.Partitions[0].LogEndOffset != 5 || d.Partitions[0].Lag != 2 {
		t.Fatalf("describe: %+v, want total lag 7 (partition 0 at 3 of 5, partition 1 at 0 of 5)", d)
	}
	if out := mustRun("lag", group); !strings.Contains(out, "total lag 7") || !strings.Contains(out, "LOG-END-OFFSET") {
		t.Fatalf("groups lag table:\n%s", out)
	}

	// A dry run changes nothing; --execute commits.
	if out := mustRun("reset-offsets", group, "--to-earliest"); !strings.Contains(out, "dry run") {
		t.Fatalf("dry run output:\n%s", out)
	}
	if d := describe(); d.TotalLag != 7 {
		t.Fatalf("a dry run moved offsets: total lag %d", d.TotalLag)
	}
	mustRun("reset-offsets", group, "--to-earliest", "--execute")
	if d := describe(); d.TotalLag != 10 || d.Partitions[0].CurrentOffset != 0 {
		t.Fatalf("after --to-earliest: %+v", d)
	}
	mustRun("reset-offsets", group, "--topic", topic, "--shift-by", "2", "--execute")
	if d := describe(); d.TotalLag != 6 || d.Partitions[1].CurrentOffset != 2 {
		t.Fatalf("after --shift-by 2: %+v", d)
	}
	mustRun("reset-offsets", group, "--to-latest", "--execute")
	if d := describe(); d.TotalLag != 0 {
		t.Fatalf("after --to-latest: %+v", d)
	}

	// An active group's offsets are not reset.
	cons := b.client(kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic))
	for {
		pctx, pcancel := context.WithTimeout(ctx, 200*time.Millisecond)
		cons.PollFetches(pctx) // joins the group; no records are due (offsets at the end)
		pcancel()
		if d := describe(); d.State == "Stable" {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the consumer never joined the group")
		}
	}
	if out, err := run("reset-offsets", group, "--to-earliest", "--execute"); err == nil || !strings.Contains(err.Error(), "Stable") {
		t.Fatalf("reset of an active group: %v\n%s", err, out)
	}
	cons.Close()

	mustRun("delete", group)
	if out := mustRun("list"); strings.Contains(out, group) {
		t.Fatalf("group still listed after delete:\n%s", out)
	}
}

// TestClusterStatusCLI runs `sluice cluster status` on a broker (brokers, controller, partitions) and
// `sluice partitions elect`.
func TestClusterStatusCLI(t *testing.T) {
	b := startBroker(t)
	b.createTopic("status", 3, nil)
	var out bytes.Buffer
	if err := clusterCmd([]string{"status", "--bootstrap", b.Addr, "--json"}, &out); err != nil {
		t.Fatal(err)
	}
	var st clusterStatus
	if err := json.Unmarshal(out.Bytes(), &st); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if len(st.Brokers) != 1 || st.Brokers[0].Address != b.Addr && !strings.HasSuffix(b.Addr, st.Brokers[0].Address[strings.LastIndex(st.Brokers[0].Address, ":"):]) {
		t.Fatalf("brokers %+v, want the one at %s", st.Brokers, b.Addr)
	}
	if st.Controller != st.Brokers[0].NodeID || st.Partitions < 3 || len(st.UnderReplicated) != 0 || len(st.Offline) != 0 || st.Brokers[0].Leaders != st.Partitions {
		t.Fatalf("status %+v", st)
	}
	out.Reset()
	if err := clusterCmd([]string{"--bootstrap", b.Addr, "status"}, &out); err != nil || !strings.Contains(out.String(), "0 under-replicated") {
		t.Fatalf("table: %v\n%s", err, out.String())
	}

	// `sluice partitions elect`: one broker leads every partition it prefers already.
	out.Reset()
	if err := partitionsCmd([]string{"elect", "--bootstrap", b.Addr, "--topic", "status", "--json"}, &out); err != nil {
		t.Fatal(err)
	}
	var rows []electRow
	if err := json.Unmarshal(out.Bytes(), &rows); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if len(rows) != 3 {
		t.Fatalf("elect: %+v, want the topic's 3 partitions", rows)
	}
	for _, r := range rows {
		if !strings.Contains(r.Result, "ELECTION_NOT_NEEDED") {
			t.Fatalf("elect %s/%d: %s, want ELECTION_NOT_NEEDED", r.Topic, r.Partition, r.Result)
		}
	}

	// `sluice partitions reassign`: a broker that does not exist is refused with Kafka's error; a move
	// onto the replicas the partition has is accepted; missing flags are refused before any request.
	out.Reset()
	err := partitionsCmd([]string{"reassign", "--bootstrap", b.Addr, "--topic", "status", "--partition", "1", "--replicas", "9"}, &out)
	if err == nil || !strings.Contains(out.String(), "INVALID_REPLICA_ASSIGNMENT") {
		t.Fatalf("reassign to broker 9: %v\n%s", err, out.String())
	}
	out.Reset()
	if err := partitionsCmd([]string{"reassign", "--bootstrap", b.Addr, "--topic", "status", "--partition", "1", "--replicas", fmt.Sprint(st.Brokers[0].NodeID), "--json"}, &out); err != nil {
		t.Fatalf("reassign onto its own replica: %v\n%s", err, out.String())
	}
	var rr reassignRow
	if err := json.Unmarshal(out.Bytes(), &rr); err != nil || rr.Result != "started" || rr.Partition != 1 {
		t.Fatalf("reassign: %+v %v\n%s", rr, err, out.String())
	}
	if err := partitionsCmd([]string{"reassign", "--bootstrap", b.Addr, "--topic", "status"}, &out); err == nil {
		t.Fatal("reassign without --partition and --replicas was accepted")
	}
}

// TestKafkaUUID: topic ids print as Kafka prints them, base64url without padding.
func TestKafkaUUID(t *testing.T) {
	id := [16]byte{0xfb, 0xff, 0xbf, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0xfe}
	got := kafkaUUID(id)
	if got != "-_-_AAECAwQFBgcICQoL_g" {
		t.Fatalf("kafkaUUID = %q", got)
	}
}

// TestTopicsAlterConfig runs `sluice topics alter-config`: a config set, then reset to the default.
func TestTopicsAlterConfig(t *testing.T) {
	b := startBroker(t)
	const topic = "alter-me"
	b.createTopic(topic, 1, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	retention := func() (string, bool) {
		t.Helper()
		rcs, err := b.admin().DescribeTopicConfigs(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		rc, err := rcs.On(topic, nil)
		if err != nil || rc.Err != nil {
			t.Fatalf("%v %v", err, rc.Err)
		}
		for _, c := range rc.Configs {
			if c.Key == "retention.ms" {
				return c.MaybeValue(), c.Source == kmsg.ConfigSourceDynamicTopicConfig
			}
		}
		t.Fatal("retention.ms not described")
		return "", false
	}
	if err := topics([]string{"--bootstrap", b.Addr, "alter-config", topic, "--config", "retention.ms=1234567"}); err != nil {
		t.Fatal(err)
	}
	if v, explicit := retention(); v != "1234567" || !explicit {
		t.Fatalf("after alter-config: retention.ms %s (explicit %v)", v, explicit)
	}
	if err := topics([]string{"--bootstrap", b.Addr, "alter-config", topic, "--delete-config", "retention.ms"}); err != nil {
		t.Fatal(err)
	}
	if v, explicit := retention(); v == "1234567" || explicit {
		t.Fatalf("after --delete-config: retention.ms %s (explicit %v)", v, explicit)
	}
}
