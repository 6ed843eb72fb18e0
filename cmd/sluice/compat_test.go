package main

// Behaviours the Kafka clients' own test suites check (issue 19): each test here fails without the
// broker change it names.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicebroker/sluice/internal/kafkawire"
)

// rawConn sends hand-encoded requests on one TCP connection, pipelined, and reads the answers in order.
type rawConn struct {
	t    *testing.T
	c    net.Conn
	r    *bufio.Reader
	corr int32
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(60 * time.Second))
	return &rawConn{t: t, c: c, r: bufio.NewReader(c)}
}

// send writes one request (header v1 or v2 by the request's flexibility) without waiting.
func (rc *rawConn) send(req kmsg.Request) {
	rc.t.Helper()
	rc.corr++
	if err := kafkawire.WriteRequest(rc.c, "test", rc.corr, req); err != nil {
		rc.t.Fatal(err)
	}
}

// recv reads the next answer into resp (which must match the request sent at that place, its
// version set).
func (rc *rawConn) recv(resp kmsg.Response) {
	rc.t.Helper()
	if _, err := kafkawire.ReadResponse(rc.r, resp); err != nil {
		rc.t.Fatalf("read %s: %v", kmsg.NameForKey(resp.Key()), err)
	}
}

// TestGroupSessionTimeoutBounds: a JoinGroup whose session timeout is outside
// group.min/max.session.timeout.ms (Kafka: 6 s and 30 min, our flags) gets INVALID_SESSION_TIMEOUT.
func TestGroupSessionTimeoutBounds(t *testing.T) {
	b := startBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := b.client()
	join := func(session time.Duration) int16 {
		jr := kmsg.NewPtrJoinGroupRequest()
		jr.Version = 2 // no MEMBER_ID_REQUIRED round trip
		jr.Group, jr.ProtocolType = "bounds", "consumer"
		jr.SessionTimeoutMillis, jr.RebalanceTimeoutMillis = int32(session.Milliseconds()), 10000
		p := kmsg.NewJoinGroupRequestProtocol()
		p.Name, p.Metadata = "range", []byte{0}
		jr.Protocols = append(jr.Protocols, p)
		r, err := jr.RequestWith(ctx, cl)
		if err != nil {
			t.Fatal(err)
		}
		return r.ErrorCode
	}
	if code := join(5 * time.Second); code != kerr.InvalidSessionTimeout.Code {
		t.Fatalf("5 s session: code %d, want INVALID_SESSION_TIMEOUT (below Kafka's 6 s minimum)", code)
	}
	if code := join(31 * time.Minute); code != kerr.InvalidSessionTimeout.Code {
		t.Fatalf("31 min session: code %d, want INVALID_SESSION_TIMEOUT", code)
	}
	// kgo sends JoinGroup v9, answered MEMBER_ID_REQUIRED once the session timeout is accepted.
	if code := join(6 * time.Second); code != 0 && code != kerr.MemberIDRequired.Code {
		t.Fatalf("6 s session: code %d, want success", code)
	}

	lower := startBroker(t, "--group-min-session-timeout", "1s", "--group-max-session-timeout", "1m")
	ctx2, cancel2 := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel2()
	cl = lower.client()
	ctx = ctx2
	if code := join(2 * time.Second); code != 0 && code != kerr.MemberIDRequired.Code {
		t.Fatalf("2 s session with --group-min-session-timeout 1s: code %d", code)
	}
	if code := join(2 * time.Minute); code != kerr.InvalidSessionTimeout.Code {
		t.Fatalf("2 min session with --group-max-session-timeout 1m: code %d", code)
	}
}

// TestOffsetCommitUnknownTopic: Kafka answers a commit for a topic (or partition) that does not exist
// UNKNOWN_TOPIC_OR_PARTITION, and still commits the request's other partitions.
func TestOffsetCommitUnknownTopic(t *testing.T) {
	b := startBroker(t, "--auto-create-topics=false")
	b.createTopic("committed", 1, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	adm := b.admin()
	var offs kadm.Offsets
	offs.AddOffset("committed", 0, 5, -1)
	offs.AddOffset("committed", 3, 5, -1) // no partition 3
	offs.AddOffset("no-such-topic", 0, 7, -1)
	resp, err := adm.CommitOffsets(ctx, "g-unknown", offs)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]map[int32]error{
		"committed":     {0: nil, 3: kerr.UnknownTopicOrPartition},
		"no-such-topic": {0: kerr.UnknownTopicOrPartition},
	}
	for topic, ps := range want {
		for p, werr := range ps {
			r, ok := resp.Lookup(topic, p)
			if !ok {
				t.Fatalf("%s/%d: not in the answer", topic, p)
			}
			if !errors.Is(r.Err, werr) && r.Err != werr {
				t.Errorf("%s/%d: %v, want %v", topic, p, r.Err, werr)
			}
		}
	}
	fetched, err := adm.FetchOffsets(ctx, "g-unknown")
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := fetched.Lookup("committed", 0); !ok || o.At != 5 {
		t.Errorf("committed/0 = %+v, want 5", o)
	}
	if _, ok := fetched.Lookup("no-such-topic", 0); ok {
		t.Errorf("an offset of an unknown topic was stored")
	}
}

// TestOffsetCommitPipelinedOrder: commits of one partition pipelined on one connection (as librdkafka's
// asynchronous commits are) apply in the order sent: the last one stays.
func TestOffsetCommitPipelinedOrder(t *testing.T) {
	b := startBroker(t)
	b.createTopic("ordered", 1, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	adm := b.admin()
	var first kadm.Offsets
	first.AddOffset("ordered", 0, 0, -1)
	if _, err := adm.CommitOffsets(ctx, "g-order", first); err != nil { // loads the coordinator
		t.Fatal(err)
	}
	const n = 200
	rc := dialRaw(t, b.Addr)
	for i := 1; i <= n; i++ {
		req := kmsg.NewPtrOffsetCommitRequest()
		req.Version = 2 // kafka-go's version; librdkafka's v7 orders the same way
		req.Group, req.Generation, req.RetentionTimeMillis = "g-order", -1, -1
		rt := kmsg.NewOffsetCommitRequestTopic()
		rt.Topic = "ordered"
		rp := kmsg.NewOffsetCommitRequestTopicPartition()
		rp.Partition, rp.Offset = 0, int64(i)
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		rc.send(req)
	}
	for i := 1; i <= n; i++ {
		resp := kmsg.NewPtrOffsetCommitResponse()
		resp.Version = 2
		rc.recv(resp)
		if code := resp.Topics[0].Partitions[0].ErrorCode; code != 0 {
			t.Fatalf("commit %d: code %d", i, code)
		}
	}
	fetched, err := adm.FetchOffsets(ctx, "g-order")
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := fetched.Lookup("ordered", 0); o.At != n {
		t.Fatalf("after %d pipelined commits the committed offset is %d, want the last one sent, %d", n, o.At, n)
	}
}

// TestTopicConfigsKafkaToolsSet: configs Kafka accepts that clients and tools set: message.format.version
// (deprecated, ignored since 3.0), cleanup.policy as a list (APPEND/SUBTRACT), and configs without
// effect here (unclean.leader.election.enable, the replication throttles).
func TestTopicConfigsKafkaToolsSet(t *testing.T) {
	b := startBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	adm := b.admin()
	resp, err := adm.CreateTopic(ctx, 1, 1, map[string]*string{
		"message.format.version":         strPtr("0.10.0.0"),
		"unclean.leader.election.enable": strPtr("false"),
		"delete.retention.ms":            strPtr("900"), // librdkafka's 0081_admin
		"max.compaction.lag.ms":          strPtr("3600000"),
	}, "tools")
	if err != nil || resp.Err != nil {
		t.Fatalf("create with message.format.version: %v %v %s", err, resp.Err, resp.ErrMessage)
	}
	if _, err := adm.CreateTopic(ctx, 1, 1, map[string]*string{"message.format.version": strPtr("latest")}, "bad-mfv"); !errors.Is(err, kerr.InvalidConfig) {
		t.Fatalf("message.format.version=latest: %v, want INVALID_CONFIG", err)
	}
	alter := func(ops ...kadm.AlterConfig) error {
		t.Helper()
		rs, err := adm.AlterTopicConfigs(ctx, ops, "tools")
		if err != nil {
			return err
		}
		return rs[0].Err
	}
	describe := func(name string) string {
		t.Helper()
		rcs, err := adm.DescribeTopicConfigs(ctx, "tools")
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range rcs[0].Configs {
			if c.Key == name {
				return c.MaybeValue()
			}
		}
		t.Fatalf("%s not described", name)
		return ""
	}
	if err := alter(kadm.AlterConfig{Op: kadm.AppendConfig, Name: "cleanup.policy", Value: strPtr("delete")}); err != nil {
		t.Fatalf("APPEND cleanup.policy delete: %v", err)
	}
	if err := alter(kadm.AlterConfig{Op: kadm.SetConfig, Name: "leader.replication.throttled.replicas", Value: strPtr("0:1")},
		kadm.AlterConfig{Op: kadm.AppendConfig, Name: "leader.replication.throttled.replicas", Value: strPtr("0:2,0:1")}); err != nil {
		t.Fatalf("APPEND to a throttle list: %v", err)
	}
	if v := describe("leader.replication.throttled.replicas"); v != "0:1,0:2" {
		t.Fatalf("leader.replication.throttled.replicas = %q after APPEND, want 0:1,0:2", v)
	}
	if err := alter(kadm.AlterConfig{Op: kadm.SubtractConfig, Name: "leader.replication.throttled.replicas", Value: strPtr("0:1")}); err != nil {
		t.Fatalf("SUBTRACT: %v", err)
	}
	if v := describe("leader.replication.throttled.replicas"); v != "0:2" {
		t.Fatalf("leader.replication.throttled.replicas = %q after SUBTRACT, want 0:2", v)
	}
	if err := alter(kadm.AlterConfig{Op: kadm.AppendConfig, Name: "cleanup.policy", Value: strPtr("compact")}); !errors.Is(err, kerr.InvalidConfig) {
		t.Fatalf("APPEND cleanup.policy compact: %v, want INVALID_CONFIG (no compaction)", err)
	}
	if err := alter(kadm.AlterConfig{Op: kadm.AppendConfig, Name: "retention.ms", Value: strPtr("5")}); !errors.Is(err, kerr.InvalidConfig) {
		t.Fatalf("APPEND to retention.ms: %v, want INVALID_CONFIG (not a list)", err)
	}
	if v := describe("message.format.version"); v != "0.10.0.0" {
		t.Fatalf("message.format.version = %q", v)
	}
}

// TestTopicCompressionType: a topic's compression.type makes the broker store batches with that codec
// whatever the producer used; producer (the default) keeps the producer's.
func TestTopicCompressionType(t *testing.T) {
	b := startBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cases := []struct {
		topic, config string
		producer      kgo.CompressionCodec
		want          uint8 // Kafka codec id read back
	}{
		{"ct-lz4", "lz4", kgo.NoCompression(), 3},
		{"ct-zstd", "zstd", kgo.SnappyCompression(), 4},
		{"ct-gzip", "gzip", kgo.Lz4Compression(), 1},
		{"ct-snappy", "snappy", kgo.ZstdCompression(), 2},
		{"ct-uncompressed", "uncompressed", kgo.GzipCompression(), 0},
		{"ct-producer", "producer", kgo.SnappyCompression(), 2},
	}
	for _, c := range cases {
		b.createTopic(c.topic, 1, map[string]*string{"compression.type": strPtr(c.config)})
		cl := b.client(kgo.ProducerBatchCompression(c.producer), kgo.DefaultProduceTopic(c.topic))
		var sent []string
		for i := range 50 {
			v := fmt.Sprintf("%s record %d %s", c.topic, i, "padding padding padding padding padding")
			sent = append(sent, v)
			cl.Produce(ctx, &kgo.Record{Key: []byte(fmt.Sprint(i)), Value: []byte(v)}, nil)
		}
		if err := cl.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		got := consumeAll(t, b, c.topic)
		if len(got) != len(sent) {
			t.Fatalf("%s: read %d records, sent %d", c.topic, len(got), len(sent))
		}
		for i, r := range got {
			if string(r.Value) != sent[i] || string(r.Key) != fmt.Sprint(i) || r.Offset != int64(i) {
				t.Fatalf("%s: record %d = %q/%q at %d", c.topic, i, r.Key, r.Value, r.Offset)
			}
			if codec := r.Attrs.CompressionType(); codec != c.want {
				t.Fatalf("%s: record %d stored with codec %d, want %d", c.topic, i, codec, c.want)
			}
		}
	}
	if _, err := b.admin().CreateTopic(ctx, 1, 1, map[string]*string{"compression.type": strPtr("brotli")}, "ct-bad"); !errors.Is(err, kerr.InvalidConfig) {
		t.Fatalf("compression.type=brotli: %v, want INVALID_CONFIG", err)
	}
}

// TestManualReplicaAssignment: CreateTopics and CreatePartitions with replica lists (kafka-go's
// TestClientCreateTopics/TestClientCreatePartitions, librdkafka's 0081_admin, operators pinning replicas)
// are accepted and placed; Kafka's errors for bad lists.
func TestManualReplicaAssignment(t *testing.T) {
	b := startBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := &kafka.Client{Addr: kafka.TCP(b.Addr), Timeout: 30 * time.Second}
	res, err := cl.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{
		{Topic: "placed", NumPartitions: -1, ReplicationFactor: -1, ReplicaAssignments: []kafka.ReplicaAssignment{
			{Partition: 0, Replicas: []int{1}}, {Partition: 2, Replicas: []int{1}}, {Partition: 1, Replicas: []int{1}}}},
		{Topic: "unknown-broker", NumPartitions: -1, ReplicationFactor: -1, ReplicaAssignments: []kafka.ReplicaAssignment{
			{Partition: 0, Replicas: []int{2}}}},
		{Topic: "twice", NumPartitions: -1, ReplicationFactor: -1, ReplicaAssignments: []kafka.ReplicaAssignment{
			{Partition: 0, Replicas: []int{1, 1}}}},
		{Topic: "gap", NumPartitions: -1, ReplicationFactor: -1, ReplicaAssignments: []kafka.ReplicaAssignment{
			{Partition: 0, Replicas: []int{1}}, {Partition: 2, Replicas: []int{1}}}},
		{Topic: "both", NumPartitions: 2, ReplicationFactor: 1, ReplicaAssignments: []kafka.ReplicaAssignment{
			{Partition: 0, Replicas: []int{1}}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]error{"placed": nil, "unknown-broker": kafka.InvalidReplicaAssignment, "twice": kafka.InvalidReplicaAssignment,
		"gap": kafka.InvalidReplicaAssignment, "both": kafka.InvalidRequest}
	for topic, werr := range want {
		if got := res.Errors[topic]; !errors.Is(got, werr) && got != werr {
			t.Errorf("create %s: %v, want %v", topic, got, werr)
		}
	}
	pr, err := cl.CreatePartitions(ctx, &kafka.CreatePartitionsRequest{Topics: []kafka.TopicPartitionsConfig{
		{Name: "placed", Count: 5, TopicPartitionAssignments: []kafka.TopicPartitionAssignment{{BrokerIDs: []int32{1}}, {BrokerIDs: []int32{1}}}},
	}})
	if err != nil || pr.Errors["placed"] != nil {
		t.Fatalf("create partitions with an assignment: %v %v", err, pr.Errors)
	}
	pr, err = cl.CreatePartitions(ctx, &kafka.CreatePartitionsRequest{Topics: []kafka.TopicPartitionsConfig{
		{Name: "placed", Count: 7, TopicPartitionAssignments: []kafka.TopicPartitionAssignment{{BrokerIDs: []int32{3}}, {BrokerIDs: []int32{1}}}},
	}})
	if err != nil || !errors.Is(pr.Errors["placed"], kafka.InvalidReplicaAssignment) {
		t.Fatalf("create partitions on broker 3: %v %v, want INVALID_REPLICA_ASSIGNMENT", err, pr.Errors)
	}
	// The placed partitions serve: one record to the last one, read back.
	kcl := b.client(kgo.DefaultProduceTopic("placed"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err := kcl.ProduceSync(ctx, &kgo.Record{Partition: 4, Value: []byte("on partition 4")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	got := consumeAll(t, b, "placed")
	if len(got) != 1 || got[0].Partition != 4 {
		t.Fatalf("read back %d records", len(got))
	}
}

// TestListOffsetsV0: sarama with an old Version (and tools built on it, such as Burrow) asks for offsets
// with ListOffsets v0; Kafka 4.0 dropped it, Sluice serves it.
func TestListOffsetsV0(t *testing.T) {
	b := startBroker(t)
	b.createTopic("old-offsets", 1, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	kcl := b.client(kgo.DefaultProduceTopic("old-offsets"))
	for range 3 {
		if err := kcl.ProduceSync(ctx, &kgo.Record{Value: []byte("v")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V0_10_0_0 // GetOffset sends ListOffsets v0 before 0.10.1
	cl, err := sarama.NewClient([]string{b.Addr}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if o, err := cl.GetOffset("old-offsets", 0, sarama.OffsetNewest); err != nil || o != 3 {
		t.Fatalf("newest: %d %v, want 3", o, err)
	}
	if o, err := cl.GetOffset("old-offsets", 0, sarama.OffsetOldest); err != nil || o != 0 {
		t.Fatalf("oldest: %d %v, want 0", o, err)
	}
}

// TestDeletedTopicNotAutoCreated: right after DeleteTopics a Metadata request that may auto-create does
// not bring the topic back (kafka-go's TestConn/test_delete_topics: Kafka's auto-creation is asynchronous);
// CreateTopics may reuse the name at once.
func TestDeletedTopicNotAutoCreated(t *testing.T) {
	b := startBroker(t)
	conn, err := kafka.Dial("tcp", b.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if err := conn.CreateTopics(kafka.TopicConfig{Topic: "short-lived", NumPartitions: 1, ReplicationFactor: 1}); err != nil {
		t.Fatal(err)
	}
	if err := conn.DeleteTopics("short-lived"); err != nil {
		t.Fatal(err)
	}
	parts, err := conn.ReadPartitions("short-lived") // Metadata v1: auto-creation allowed
	if len(parts) != 0 {
		t.Fatalf("a Metadata request right after the deletion re-created the topic: %d partitions (%v)", len(parts), err)
	}
	if err := conn.CreateTopics(kafka.TopicConfig{Topic: "short-lived", NumPartitions: 2, ReplicationFactor: 1}); err != nil {
		t.Fatalf("recreating the deleted name at once: %v", err)
	}
	parts, err = conn.ReadPartitions("short-lived")
	if err != nil || len(parts) != 2 {
		t.Fatalf("recreated topic: %d partitions, %v", len(parts), err)
	}
}

// TestGroupInitialRebalanceDelay: the first rebalance of an empty group waits group.initial.rebalance.delay.ms
// for more members (Kafka's 3 s default), so consumers started together share the first generation
// (librdkafka's 0089_max_poll_interval counts on it in full mode).
func TestGroupInitialRebalanceDelay(t *testing.T) {
	b := startBroker(t, "--group-initial-rebalance-delay", "2s")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := b.admin().DescribeGroups(ctx, "forming"); err != nil { // the coordinator loads
		t.Fatal(err)
	}
	join := func(rc *rawConn) {
		jr := kmsg.NewPtrJoinGroupRequest()
		jr.Version = 2 // no MEMBER_ID_REQUIRED round trip
		jr.Group, jr.ProtocolType = "forming", "consumer"
		jr.SessionTimeoutMillis, jr.RebalanceTimeoutMillis = 10000, 10000
		p := kmsg.NewJoinGroupRequestProtocol()
		p.Name, p.Metadata = "range", []byte{0}
		jr.Protocols = append(jr.Protocols, p)
		rc.send(jr)
	}
	first, second := dialRaw(t, b.Addr), dialRaw(t, b.Addr)
	start := time.Now()
	join(first)
	time.Sleep(500 * time.Millisecond)
	join(second)
	for i, rc := range []*rawConn{first, second} {
		resp := kmsg.NewPtrJoinGroupResponse()
		resp.Version = 2
		rc.recv(resp)
		if resp.ErrorCode != 0 || resp.Generation != 1 {
			t.Fatalf("member %d: code %d, generation %d; want both in generation 1", i, resp.ErrorCode, resp.Generation)
		}
		if resp.LeaderID == resp.MemberID && len(resp.Members) != 2 {
			t.Fatalf("the leader sees %d members, want 2", len(resp.Members))
		}
	}
	if waited := time.Since(start); waited < 2*time.Second {
		t.Fatalf("the first generation formed after %v, before the 2 s initial delay", waited)
	}
}
