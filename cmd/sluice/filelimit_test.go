package main

import (
	"context"
	"os/exec"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestCreateTopicsWithinOpenFilesLimit: a broker whose open files limit cannot hold the files of the
// partitions asked for refuses them (POLICY_VIOLATION, nothing created) instead of dying when a
// partition cannot open its segment (and again at every restart); it keeps serving. The broker runs
// under prlimit with a limit of 600 descriptors: 20 partitions fit, then 150 more, but not 150 more again
// in the same request, nor 150 after that. 170 partitions under 600 descriptors also means a partition
// holds fewer than 5 files open (issue 14: one, its active segment, beside a bounded cache of the
// metadata files): every one of them takes a record, also after a restart under the same limit.
func TestCreateTopicsWithinOpenFilesLimit(t *testing.T) {
	if _, err := exec.LookPath("prlimit"); err != nil {
		t.Skip("prlimit (util-linux) not installed")
	}
	b := newTestBroker(t, 0, freePort(t), freePort(t))
	b.Command = func(args []string) *exec.Cmd {
		self := serveSelf(args)
		cmd := exec.Command("prlimit", append([]string{"--nofile=600:600", "--", self.Path}, self.Args[1:]...)...)
		cmd.Env = self.Env
		return cmd
	}
	b.start()
	cl := b.client(kgo.RequiredAcks(kgo.AllISRAcks()), kgo.DefaultProduceTopic("fits"))
	defer cl.Close()
	create := func(topic string, partitions int32) (int16, string) {
		req := kmsg.NewPtrCreateTopicsRequest()
		rt := kmsg.NewCreateTopicsRequestTopic()
		rt.Topic, rt.NumPartitions, rt.ReplicationFactor = topic, partitions, 1
		req.Topics = append(req.Topics, rt)
		req.TimeoutMillis = 60000
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			t.Fatalf("create topics %s: %v", topic, err)
		}
		msg := ""
		if m := resp.Topics[0].ErrorMessage; m != nil {
			msg = *m
		}
		return resp.Topics[0].ErrorCode, msg
	}
	if code, msg := create("fits", 20); code != 0 {
		t.Fatalf("20 partitions under a limit of 600: %v %s", kerr.ErrorForCode(code), msg)
	}
	// One request with two topics that fit each alone but not together: the second is refused.
	creq := kmsg.NewPtrCreateTopicsRequest()
	for _, name := range []string{"half-a", "half-b"} {
		rt := kmsg.NewCreateTopicsRequestTopic()
		rt.Topic, rt.NumPartitions, rt.ReplicationFactor = name, 150, 1
		creq.Topics = append(creq.Topics, rt)
	}
	creq.TimeoutMillis = 60000
	rctx, rcancel := context.WithTimeout(context.Background(), 90*time.Second)
	resp2, err := creq.RequestWith(rctx, cl)
	rcancel()
	if err != nil {
		t.Fatalf("create two topics: %v", err)
	}
	if a, b := resp2.Topics[0].ErrorCode, resp2.Topics[1].ErrorCode; a != 0 || b != kerr.PolicyViolation.Code {
		t.Fatalf("two topics of 150 in one request: %v and %v, want the first created and the second refused",
			kerr.ErrorForCode(a), kerr.ErrorForCode(b))
	}
	if code, msg := create("too-many", 150); code != kerr.PolicyViolation.Code {
		t.Fatalf("150 more partitions under a limit of 600: %v %q, want POLICY_VIOLATION", kerr.ErrorForCode(code), msg)
	} else {
		t.Logf("refused: %s", msg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	produceToAll := func(cl *kgo.Client, when string) {
		t.Helper()
		var recs []*kgo.Record
		for topic, n := range map[string]int32{"fits": 20, "half-a": 150} {
			for p := range n {
				recs = append(recs, &kgo.Record{Topic: topic, Partition: p, Value: []byte(when)})
			}
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatalf("produce to all 170 partitions %s: %v", when, err)
		}
	}
	all := b.client(kgo.RequiredAcks(kgo.AllISRAcks()), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	produceToAll(all, "after the refusal")
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr("too-many")
	req.Topics = append(req.Topics, rt)
	req.AllowAutoTopicCreation = false
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	if code := resp.Topics[0].ErrorCode; code != kerr.UnknownTopicOrPartition.Code {
		t.Fatalf("the refused topic: %v, want it not created", kerr.ErrorForCode(code))
	}
	all.Close()
	cl.Close()
	// A restart opens every partition's files again: under the same limit.
	b.stop()
	b.start()
	produceToAll(b.client(kgo.RequiredAcks(kgo.AllISRAcks()), kgo.RecordPartitioner(kgo.ManualPartitioner())), "after a restart")
}
