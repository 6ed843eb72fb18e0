package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

const sentinel = "sentinel"

// writeSentinels appends one plain record to every partition of topic; a consumer that has seen them
// all has read everything written before, whatever control batches and aborted data lie between.
func writeSentinels(t testing.TB, b *testBroker, topic string, partitions int32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := b.client(kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for p := range partitions {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: p, Value: []byte(sentinel)}).FirstErr(); err != nil {
			t.Fatalf("sentinel %s/%d: %v", topic, p, err)
		}
	}
}

// consumeToSentinels reads topic from the start until it has seen a sentinel in every partition and
// returns the other records.
func consumeToSentinels(t testing.TB, b *testBroker, topic string, partitions int32, opts ...kgo.Opt) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := b.client(append([]kgo.Opt{kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())}, opts...)...)
	seen := map[int32]bool{}
	var out []*kgo.Record
	for len(seen) < int(partitions) {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("%s: saw sentinels of %d of %d partitions before timing out (%d records)", topic, len(seen), partitions, len(out))
		}
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			if string(r.Value) == sentinel {
				seen[r.Partition] = true
				return
			}
			if !seen[r.Partition] {
				out = append(out, r)
			}
		})
	}
	return out
}

func values(rs []*kgo.Record) []string {
	out := make([]string, 0, len(rs))
	for _, r := range rs {
		out = append(out, string(r.Value))
	}
	sort.Strings(out)
	return out
}

func txnRecords(topic, prefix string, n int) []*kgo.Record {
	rs := make([]*kgo.Record, n)
	for i := range rs {
		rs[i] = &kgo.Record{Topic: topic, Key: []byte(fmt.Sprint(i)), Value: []byte(fmt.Sprintf("%s-%03d", prefix, i))}
	}
	return rs
}

func runTxn(ctx context.Context, t testing.TB, cl *kgo.Client, commit bool, rs ...*kgo.Record) {
	t.Helper()
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
		t.Fatalf("transactional produce: %v", err)
	}
	if err := cl.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
		t.Fatalf("end transaction (commit=%v): %v", commit, err)
	}
}

// countPrefixes counts values by their prefix (the part before the last '-').
func countPrefixes(vs []string) map[string]int {
	m := map[string]int{}
	for _, v := range vs {
		m[v[:strings.LastIndexByte(v, '-')]]++
	}
	return m
}

// TestTxnAbortedInvisible: aborted transactions are invisible to read_committed consumers and
// visible to read_uncommitted ones; an open transaction holds the last stable offset (ListOffsets
// read_committed) and read_committed consumption back, while plain records keep flowing for
// read_uncommitted consumers.
func TestTxnAbortedInvisible(t *testing.T) {
	b := startBroker(t)
	const topic, parts = "txvis", 2
	b.createTopic(topic, parts, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tx := b.client(kgo.TransactionalID("vis"), kgo.DefaultProduceTopic(topic))
	plain := b.client()

	runTxn(ctx, t, tx, true, txnRecords(topic, "c1", 20)...)
	runTxn(ctx, t, tx, false, txnRecords(topic, "a1", 20)...)
	if err := plain.ProduceSync(ctx, txnRecords(topic, "p1", 10)...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	// An open transaction: the LSO stays at its first offset while the high watermark moves on.
	if err := tx.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := tx.ProduceSync(ctx, txnRecords(topic, "c2", 20)...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := plain.ProduceSync(ctx, txnRecords(topic, "p2", 10)...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	adm := kadm.NewClient(plain)
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	stable, err := adm.ListCommittedOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	ends.Each(func(o kadm.ListedOffset) {
		s, _ := stable.Lookup(topic, o.Partition)
		if s.Err != nil || o.Err != nil || s.Offset >= o.Offset {
			t.Errorf("partition %d with an open transaction: read_committed end %d (%v), high watermark %d (%v)", o.Partition, s.Offset, s.Err, o.Offset, o.Err)
		}
	})
	if err := tx.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	runTxn(ctx, t, tx, false, txnRecords(topic, "a2", 20)...)
	writeSentinels(t, b, topic, parts)

	committed := countPrefixes(values(consumeToSentinels(t, b, topic, parts, kgo.FetchIsolationLevel(kgo.ReadCommitted()))))
	if want := map[string]int{"c1": 20, "c2": 20, "p1": 10, "p2": 10}; fmt.Sprint(committed) != fmt.Sprint(want) {
		t.Errorf("read_committed saw %v, want %v", committed, want)
	}
	all := countPrefixes(values(consumeToSentinels(t, b, topic, parts, kgo.FetchIsolationLevel(kgo.ReadUncommitted()))))
	if want := map[string]int{"a1": 20, "a2": 20, "c1": 20, "c2": 20, "p1": 10, "p2": 10}; fmt.Sprint(all) != fmt.Sprint(want) {
		t.Errorf("read_uncommitted saw %v, want %v", all, want)
	}
	// After everything ended, the LSO is the high watermark again.
	ends, _ = adm.ListEndOffsets(ctx, topic)
	stable, _ = adm.ListCommittedOffsets(ctx, topic)
	ends.Each(func(o kadm.ListedOffset) {
		if s, _ := stable.Lookup(topic, o.Partition); s.Offset != o.Offset {
			t.Errorf("partition %d: read_committed end %d, high watermark %d", o.Partition, s.Offset, o.Offset)
		}
	})
}

// TestTxnFencing: a second producer with the same transactional id fences the first: the first's
// commit fails, its open transaction is aborted, and only the second's records are committed.
func TestTxnFencing(t *testing.T) {
	b := startBroker(t)
	const topic = "txfence"
	b.createTopic(topic, 1, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	first := b.client(kgo.TransactionalID("fence"), kgo.DefaultProduceTopic(topic))
	if err := first.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := first.ProduceSync(ctx, txnRecords(topic, "zombie", 5)...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	second := b.client(kgo.TransactionalID("fence"), kgo.DefaultProduceTopic(topic))
	runTxn(ctx, t, second, true, txnRecords(topic, "second", 5)...)

	err := first.EndTransaction(ctx, kgo.TryCommit)
	if err == nil {
		t.Fatal("the fenced producer committed")
	}
	if !errors.Is(err, kerr.ProducerFenced) && !errors.Is(err, kerr.InvalidProducerEpoch) {
		t.Fatalf("fenced commit: %v, want PRODUCER_FENCED or INVALID_PRODUCER_EPOCH", err)
	}
	writeSentinels(t, b, topic, 1)
	got := countPrefixes(values(consumeToSentinels(t, b, topic, 1, kgo.FetchIsolationLevel(kgo.ReadCommitted()))))
	if want := map[string]int{"second": 5}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("read_committed saw %v, want %v", got, want)
	}
	// DescribeTransactions shows the second producer's completed transaction at a bumped epoch.
	adm := kadm.NewClient(second)
	desc, err := adm.DescribeTransactions(ctx, "fence")
	if err != nil {
		t.Fatal(err)
	}
	d, ok := desc["fence"]
	if !ok || d.Err != nil || d.State != "CompleteCommit" || d.ProducerEpoch < 1 {
		t.Fatalf("describe: %+v", d)
	}
}

var _ = sync.Mutex{}
