package group

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicebroker/sluice/batch"
)

// txnMemStore is memStore that also writes transactional batches; markers are appended by the test.
type txnMemStore struct{ *memStore }

func (s txnMemStore) AppendTxn(_ context.Context, _ string, pid int64, epoch int16, recs []Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.batches = append(s.batches, batch.Encode(recs, time.Now().UnixMilli(), batch.AttrTransactional, batch.Producer{ID: pid, Epoch: epoch, BaseSequence: -1}))
	return nil
}

func (s txnMemStore) marker(pid int64, commit bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.batches = append(s.batches, batch.Marker(pid, 0, 1, commit, time.Now().UnixMilli()))
}

func txnCommit(group string, pid int64, partition int32, offset int64) *kmsg.TxnOffsetCommitRequest {
	r := kmsg.NewPtrTxnOffsetCommitRequest()
	r.Version = 3
	r.Group, r.ProducerID, r.ProducerEpoch, r.Generation = group, pid, 0, -1
	t := kmsg.NewTxnOffsetCommitRequestTopic()
	t.Topic = "in"
	p := kmsg.NewTxnOffsetCommitRequestTopicPartition()
	p.Partition, p.Offset = partition, offset
	t.Partitions = append(t.Partitions, p)
	r.Topics = append(r.Topics, t)
	return r
}

func committedAt(c *Coordinator, group string, partition int32) int64 {
	return c.FetchOffsets(group, map[string][]int32{"in": {partition}})["in"][partition].Offset
}

// TestTxnOffsetsPendingUntilMarker: transactional offsets are invisible until the commit marker,
// dropped by an abort, and rebuilt the same way by replaying the log (markers included).
func TestTxnOffsetsPendingUntilMarker(t *testing.T) {
	ms := &memStore{}
	s := txnMemStore{ms}
	c := New(Config{Tick: 10 * time.Millisecond}, s)
	t.Cleanup(c.Close)
	all := func(string) bool { return true }
	ctx := context.Background()

	commit := func(pid int64, partition int32, offset int64) {
		t.Helper()
		resp := c.TxnOffsetCommit(ctx, txnCommit("g", pid, partition, offset))
		if code := resp.Topics[0].Partitions[0].ErrorCode; code != 0 {
			t.Fatalf("TxnOffsetCommit: code %d", code)
		}
	}
	commit(5, 0, 10)
	if got := committedAt(c, "g", 0); got != -1 || !c.PendingTxnOffset("g", "in", 0) {
		t.Fatalf("before the marker: committed %d, pending %v", got, c.PendingTxnOffset("g", "in", 0))
	}
	s.marker(5, true)
	c.CompleteTxn(5, true, all)
	if got := committedAt(c, "g", 0); got != 10 || c.PendingTxnOffset("g", "in", 0) {
		t.Fatalf("after commit: committed %d", got)
	}
	commit(6, 0, 20)
	s.marker(6, false)
	c.CompleteTxn(6, false, all)
	if got := committedAt(c, "g", 0); got != 10 {
		t.Fatalf("after abort: committed %d, want 10", got)
	}
	commit(7, 1, 5) // still open
	// Another partition's marker does not touch this group.
	c.CompleteTxn(7, true, func(string) bool { return false })
	if !c.PendingTxnOffset("g", "in", 1) {
		t.Fatal("a marker of another partition settled the offsets")
	}

	c2 := New(Config{Tick: 10 * time.Millisecond}, s)
	t.Cleanup(c2.Close)
	ms.mu.Lock()
	var buf []byte
	for _, b := range ms.batches {
		buf = append(buf, b...)
	}
	ms.mu.Unlock()
	if _, err := c2.ReplayBatches(buf, all); err != nil {
		t.Fatal(err)
	}
	if got := committedAt(c2, "g", 0); got != 10 {
		t.Fatalf("replayed: committed %d, want 10", got)
	}
	if got := committedAt(c2, "g", 1); got != -1 || !c2.PendingTxnOffset("g", "in", 1) {
		t.Fatalf("replayed open transaction: committed %d, pending %v", got, c2.PendingTxnOffset("g", "in", 1))
	}

	// KIP-447: a member id and generation are checked.
	req := txnCommit("g", 8, 0, 30)
	req.MemberID, req.Generation = "nobody", 3
	if code := c.TxnOffsetCommit(ctx, req).Topics[0].Partitions[0].ErrorCode; code != kerr.IllegalGeneration.Code && code != kerr.UnknownMemberID.Code {
		t.Fatalf("unknown member: code %d", code)
	}
}
