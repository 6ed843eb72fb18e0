package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicebroker/sluice/broker"
	"github.com/sluicebroker/sluice/internal/kafkatest"
	"github.com/sluicebroker/sluice/internal/testcluster"
	"github.com/sluicebroker/sluice/txn"
)

const sentinel = "sentinel"

// writeSentinels appends one plain record to every partition of topic; a consumer that has seen them
// all has read everything written before, whatever control batches and aborted data lie between.
func writeSentinels(t testing.TB, b *testBroker, topic string, partitions int32, tag string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := b.client(kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for p := range partitions {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: p, Value: []byte(sentinel + tag)}).FirstErr(); err != nil {
			t.Fatalf("sentinel %s/%d: %v", topic, p, err)
		}
	}
}

// consumeToSentinels reads topic from the start until it has seen a sentinel in every partition and
// returns the other records (earlier sentinels, of other tags, left out).
func consumeToSentinels(t testing.TB, b *testBroker, topic string, partitions int32, tag string, opts ...kgo.Opt) []*kgo.Record {
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
			if strings.HasPrefix(string(r.Value), sentinel) {
				if string(r.Value) == sentinel+tag {
					seen[r.Partition] = true
				}
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
	writeSentinels(t, b, topic, parts, "")

	committed := countPrefixes(values(consumeToSentinels(t, b, topic, parts, "", kgo.FetchIsolationLevel(kgo.ReadCommitted()))))
	if want := map[string]int{"c1": 20, "c2": 20, "p1": 10, "p2": 10}; fmt.Sprint(committed) != fmt.Sprint(want) {
		t.Errorf("read_committed saw %v, want %v", committed, want)
	}
	all := countPrefixes(values(consumeToSentinels(t, b, topic, parts, "", kgo.FetchIsolationLevel(kgo.ReadUncommitted()))))
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
	writeSentinels(t, b, topic, 1, "")
	got := countPrefixes(values(consumeToSentinels(t, b, topic, 1, "", kgo.FetchIsolationLevel(kgo.ReadCommitted()))))
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

// pipeMember is one member of the consume-transform-produce pipeline.
type pipeMember struct {
	stop    chan struct{} // close: finish the current transaction and leave
	abandon chan struct{} // close: leave in the middle of a transaction, never ending it
	done    chan struct{}
}

func startPipeMember(t *testing.T, b *testBroker, txnID, in, out, groupID string) *pipeMember {
	m := &pipeMember{stop: make(chan struct{}), abandon: make(chan struct{}), done: make(chan struct{})}
	s, err := kgo.NewGroupTransactSession(
		kgo.SeedBrokers(b.Addr),
		kgo.TransactionalID(txnID),
		kgo.TransactionTimeout(4*time.Second),
		kgo.ConsumerGroup(groupID),
		kgo.ConsumeTopics(in),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxBytes(4<<10), // small fetches: many transactions, so churn lands mid-stream
		kgo.DefaultProduceTopic(out),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.SessionTimeout(6*time.Second),
		kgo.HeartbeatInterval(500*time.Millisecond),
	)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(m.done)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			select {
			case <-m.stop:
			case <-m.abandon:
			}
			cancel()
		}()
		for ctx.Err() == nil {
			fs := s.PollRecords(ctx, 40)
			if fs.Empty() {
				continue
			}
			if err := s.Begin(); err != nil {
				t.Errorf("%s: begin: %v", txnID, err)
				break
			}
			var recs []*kgo.Record
			fs.EachRecord(func(r *kgo.Record) {
				recs = append(recs, &kgo.Record{Partition: r.Partition, Key: r.Key, Value: append([]byte("out-"), r.Value...)})
			})
			// A failed produce aborts below; the input is then read again.
			_ = s.ProduceSync(context.Background(), recs...).FirstErr()
			select {
			case <-m.abandon:
				// Leave without ending: the transaction stays open until the coordinator times it out.
				s.CloseAllowingRebalance()
				return
			default:
			}
			ectx, ecancel := context.WithTimeout(context.Background(), 30*time.Second)
			if _, err := s.End(ectx, kgo.TryCommit); err != nil {
				t.Logf("%s: end: %v", txnID, err) // an abort; the records are read again
			}
			ecancel()
		}
		s.CloseAllowingRebalance()
	}()
	return m
}

// groupProgress is how many input records the group has committed.
func groupProgress(ctx context.Context, adm *kadm.Client, groupID, topic string) int64 {
	offs, err := adm.FetchOffsets(ctx, groupID)
	if err != nil {
		return 0
	}
	var n int64
	offs.Each(func(o kadm.OffsetResponse) {
		if o.Topic == topic && o.Err == nil && o.At > 0 {
			n += o.At
		}
	})
	return n
}

// TestTxnPipelineExactlyOnce: a consume-transform-produce pipeline of franz-go GroupTransactSessions
// under member churn (joins, a graceful leave, a member abandoning an open transaction): the output
// holds every input record exactly once for read_committed consumers, and the group's committed
// offsets end at the input's end.
func TestTxnPipelineExactlyOnce(t *testing.T) {
	b := startBroker(t)
	const in, out, groupID, parts, n = "pipe-in", "pipe-out", "pipe", 4, 2000
	b.createTopic(in, parts, nil)
	b.createTopic(out, parts, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	prod := b.client(kgo.ProducerLinger(2 * time.Millisecond))
	var recs []*kgo.Record
	for i := range n {
		recs = append(recs, &kgo.Record{Topic: in, Key: []byte(fmt.Sprint(i)), Value: []byte(fmt.Sprintf("in-%04d", i))})
	}
	if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	adm := b.admin()
	waitProgress := func(min int64) {
		t.Helper()
		for groupProgress(ctx, adm, groupID, in) < min {
			if ctx.Err() != nil {
				t.Fatalf("pipeline stuck below %d committed input records (at %d)", min, groupProgress(context.Background(), adm, groupID, in))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	var members []*pipeMember
	defer func() {
		for _, m := range members {
			select {
			case <-m.stop:
			default:
				close(m.stop)
			}
			<-m.done
		}
	}()
	start := func(id string) *pipeMember {
		m := startPipeMember(t, b, id, in, out, groupID)
		members = append(members, m)
		return m
	}
	a := start("pipe-a")
	bm := start("pipe-b")
	waitProgress(n / 5)
	start("pipe-c") // joins: rebalance mid-stream
	waitProgress(2 * n / 5)
	close(a.stop) // graceful leave
	<-a.done
	waitProgress(3 * n / 5)
	close(bm.abandon) // leaves with a transaction open
	<-bm.done
	start("pipe-d")
	waitProgress(n)

	writeSentinels(t, b, out, parts, "")
	got := values(consumeToSentinels(t, b, out, parts, "", kgo.FetchIsolationLevel(kgo.ReadCommitted())))
	count := map[string]int{}
	for _, v := range got {
		count[v]++
	}
	for i := range n {
		v := fmt.Sprintf("out-in-%04d", i)
		if count[v] != 1 {
			t.Errorf("%s appears %d times in the read_committed output", v, count[v])
		}
	}
	if len(got) != n {
		t.Errorf("read_committed output holds %d records, want %d", len(got), n)
	}
	all := consumeToSentinels(t, b, out, parts, "", kgo.FetchIsolationLevel(kgo.ReadUncommitted()))
	t.Logf("output: %d committed records, %d including aborted ones", len(got), len(all))
	if len(all) < len(got) {
		t.Errorf("read_uncommitted saw fewer records (%d) than read_committed (%d)", len(all), len(got))
	}
}

// TestTxnKill9MidTransaction, three times: a committed transaction, a transaction left open, and one
// whose commit races the kill -9 of the broker. After each restart, read_committed consumers see every
// committed transaction whole, nothing of the open one (the coordinator, rebuilt from
// __transaction_state, aborts it on its timeout), and the raced one entirely or not at all.
func TestTxnKill9MidTransaction(t *testing.T) {
	b := startBroker(t)
	const topic, parts = "txcrash", 2
	b.createTopic(topic, parts, nil)
	want := map[string]int{}
	for round := 1; round <= 3; round++ {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		opts := func(id string) []kgo.Opt {
			return []kgo.Opt{kgo.SeedBrokers(b.Addr), kgo.TransactionalID(id), kgo.TransactionTimeout(3 * time.Second),
				kgo.DefaultProduceTopic(topic), kgo.RequestRetries(2)}
		}
		newClient := func(id string) *kgo.Client {
			cl, err := kgo.NewClient(opts(id)...)
			if err != nil {
				t.Fatal(err)
			}
			return cl
		}
		// The same id every round: its new InitProducerId also fences whatever the last round left.
		committer := newClient("crash-commit")
		runTxn(ctx, t, committer, true, txnRecords(topic, fmt.Sprintf("c%d", round), 20)...)
		want[fmt.Sprintf("c%d", round)] = 20

		open := newClient(fmt.Sprintf("crash-open-%d", round)) // never used again: only the timeout ends it
		if err := open.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		if err := open.ProduceSync(ctx, txnRecords(topic, fmt.Sprintf("u%d", round), 20)...).FirstErr(); err != nil {
			t.Fatal(err)
		}

		racer := newClient(fmt.Sprintf("crash-race-%d", round))
		if err := racer.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		if err := racer.ProduceSync(ctx, txnRecords(topic, fmt.Sprintf("e%d", round), 20)...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		// The commit is cut off where the kill lands: the client may not retry it on the restarted
		// broker (its context ends with the kill), so the outcome is whatever the broker had decided.
		ectx, ecancel := context.WithCancel(ctx)
		ended := make(chan struct{})
		go func() {
			defer close(ended)
			_ = racer.EndTransaction(ectx, kgo.TryCommit)
		}()
		time.Sleep(time.Duration(round-1) * 2 * time.Millisecond) // vary where the kill lands
		ecancel()
		b.kill9()
		<-ended
		b.start()
		cancel()
		for _, cl := range []*kgo.Client{committer, open, racer} {
			cl.Close()
		}

		writeSentinels(t, b, topic, parts, fmt.Sprint(round))
		got := countPrefixes(values(consumeToSentinels(t, b, topic, parts, fmt.Sprint(round), kgo.FetchIsolationLevel(kgo.ReadCommitted()))))
		for k, v := range got {
			switch k[0] {
			case 'c':
				if v != want[k] {
					t.Errorf("round %d: committed %s: %d records visible, want %d", round, k, v, want[k])
				}
			case 'u':
				t.Errorf("round %d: %d records of the open transaction %s visible to read_committed", round, v, k)
			case 'e':
				if v != 20 {
					t.Errorf("round %d: transaction %s half visible: %d of 20 records", round, k, v)
				}
			}
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("round %d: %s: %d records visible, want %d", round, k, got[k], v)
			}
		}
		all := countPrefixes(values(consumeToSentinels(t, b, topic, parts, fmt.Sprint(round), kgo.FetchIsolationLevel(kgo.ReadUncommitted()))))
		if u := fmt.Sprintf("u%d", round); all[u] != 20 {
			t.Errorf("round %d: read_uncommitted sees %d records of %s, want 20 (acknowledged before the kill)", round, all[u], u)
		}
		t.Logf("round %d: raced commit e%d visible: %v", round, round, got[fmt.Sprintf("e%d", round)] == 20)
		if t.Failed() {
			return
		}
	}
}

// TestTxnWriteTxnMarkers: the remote marker path. A transactional batch is written with a plain
// producer id; broker.KafkaMarkerSender then sends WriteTxnMarkers to the broker's listener, as a
// coordinator on another node would: the abort ends the transaction (the LSO reaches the high
// watermark) and read_committed consumers never see its records. DescribeProducers shows the open
// transaction before the marker.
func TestTxnWriteTxnMarkers(t *testing.T) {
	b := startBroker(t)
	const topic = "txremote"
	b.createTopic(topic, 1, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := b.client()
	init := kmsg.NewPtrInitProducerIDRequest()
	init.TransactionTimeoutMillis = 60000
	ir, err := init.RequestWith(ctx, cl)
	if err != nil || ir.ErrorCode != 0 {
		t.Fatalf("InitProducerId: %v %+v", err, ir)
	}
	if code, _ := rawProduceOffset(ctx, t, cl, topic, 0, kafkatest.TransactionalBatch(ir.ProducerID, ir.ProducerEpoch, 0, []byte("x-1"), []byte("x-2"))); code != 0 {
		t.Fatalf("transactional produce: error %d", code)
	}
	adm := kadm.NewClient(cl)
	lso := func() (int64, int64) {
		ends, err := adm.ListEndOffsets(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		stable, err := adm.ListCommittedOffsets(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		e, _ := ends.Lookup(topic, 0)
		s, _ := stable.Lookup(topic, 0)
		return s.Offset, e.Offset
	}
	if s, e := lso(); s != 0 || e != 2 {
		t.Fatalf("open transaction: LSO %d, high watermark %d; want 0 and 2", s, e)
	}
	dp, err := adm.DescribeProducers(ctx, kadm.TopicsSet{topic: {0: {}}})
	if err != nil {
		t.Fatal(err)
	}
	var txnStart int64 = -2
	for _, p := range dp.SortedProducers() {
		if p.ProducerID == ir.ProducerID {
			txnStart = p.CurrentTxnStartOffset
		}
	}
	if txnStart != 0 {
		t.Fatalf("DescribeProducers: current transaction start %d, want 0", txnStart)
	}

	sender := &broker.KafkaMarkerSender{Leader: func(string, int32) (string, bool) { return b.Addr, true }}
	mk := broker.Marker{ProducerID: ir.ProducerID, ProducerEpoch: ir.ProducerEpoch, CoordinatorEpoch: 1, Commit: false}
	if err := sender.SendMarkers(ctx, mk, []txn.TopicPartition{{Topic: topic, Partition: 0}}); err != nil {
		t.Fatalf("WriteTxnMarkers: %v", err)
	}
	if s, e := lso(); s != 3 || e != 3 {
		t.Fatalf("after the abort marker: LSO %d, high watermark %d; want 3 and 3", s, e)
	}
	// A zombie of an older epoch is fenced by the marker's epoch.
	mk.ProducerEpoch++
	if err := sender.SendMarkers(ctx, mk, []txn.TopicPartition{{Topic: topic, Partition: 0}}); err != nil {
		t.Fatalf("second marker: %v", err)
	}
	if code, _ := rawProduceOffset(ctx, t, cl, topic, 0, kafkatest.TransactionalBatch(ir.ProducerID, ir.ProducerEpoch, 1, []byte("zombie"))); code != kerr.InvalidProducerEpoch.Code {
		t.Fatalf("zombie produce after a newer marker: error %d, want INVALID_PRODUCER_EPOCH", code)
	}
	writeSentinels(t, b, topic, 1, "")
	if got := consumeToSentinels(t, b, topic, 1, "", kgo.FetchIsolationLevel(kgo.ReadCommitted())); len(got) != 0 {
		t.Fatalf("read_committed saw %d aborted records", len(got))
	}
	if got := consumeToSentinels(t, b, topic, 1, "", kgo.FetchIsolationLevel(kgo.ReadUncommitted())); len(got) != 2 {
		t.Fatalf("read_uncommitted saw %d records, want the 2 aborted ones", len(got))
	}
}

// TestTxnCluster, on three brokers: transactions span partitions led by different brokers, so the
// coordinator reaches some through WriteTxnMarkers; committed ones are visible whole to
// read_committed consumers, aborted ones not at all. Then the coordinator of an open transaction is
// killed: the new leader of its __transaction_state partition rebuilds the state and aborts the
// transaction on its timeout, and the id keeps working there.
func TestTxnCluster(t *testing.T) {
	c := startCluster(t, 3)
	const topic, parts = "txcluster", 3
	c.createTopic(topic, parts, 3, nil)
	c.waitBalanced(topic)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	leaders := map[int32]bool{}
	for p := range int32(parts) {
		leaders[c.leaderOf(topic, p)] = true
	}
	if len(leaders) < 2 {
		t.Fatalf("balanced partitions led by %v: no remote markers to test", leaders)
	}
	txOpts := []kgo.Opt{kgo.DefaultProduceTopic(topic), kgo.TransactionTimeout(3 * time.Second)}
	tx := c.client(append(txOpts, kgo.TransactionalID("cluster"))...)
	for round := range 3 {
		runTxn(ctx, t, tx, true, txnRecords(topic, fmt.Sprintf("c%d", round), 30)...)
		runTxn(ctx, t, tx, false, txnRecords(topic, fmt.Sprintf("a%d", round), 30)...)
	}

	coordinator := c.findCoordinator(testcluster.TransactionCoordinator, "cluster-open")
	open := c.client(append(txOpts, kgo.TransactionalID("cluster-open"))...)
	if err := open.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := open.ProduceSync(ctx, txnRecords(topic, "open", 30)...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	t.Logf("killing broker %d, the coordinator of the open transaction", coordinator)
	c.node(coordinator).kill9()
	c.waitFor(60*time.Second, "the transaction coordinator to move", func() error {
		if moved := c.findCoordinator(testcluster.TransactionCoordinator, "cluster-open"); moved == coordinator {
			return fmt.Errorf("still broker %d", moved)
		}
		return nil
	})
	// The same id, through its new coordinator: the open transaction is over (timed out or fenced).
	again := c.client(append(txOpts, kgo.TransactionalID("cluster-open"))...)
	runTxn(ctx, t, again, true, txnRecords(topic, "after", 30)...)

	var live *testBroker
	for i, b := range c.brokers {
		if int32(i+1) != coordinator {
			live = b
		}
	}
	seeds := []kgo.Opt{}
	for i, b := range c.brokers {
		if int32(i+1) != coordinator {
			seeds = append(seeds, kgo.SeedBrokers(b.Addr))
		}
	}
	plain := c.client(kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for p := range int32(parts) {
		if err := plain.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: p, Value: []byte(sentinel)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	got := countPrefixes(values(consumeToSentinels(t, live, topic, parts, "", append(seeds, kgo.FetchIsolationLevel(kgo.ReadCommitted()))...)))
	if want := map[string]int{"after": 30, "c0": 30, "c1": 30, "c2": 30}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("read_committed saw %v, want %v", got, want)
	}
	all := countPrefixes(values(consumeToSentinels(t, live, topic, parts, "", append(seeds, kgo.FetchIsolationLevel(kgo.ReadUncommitted()))...)))
	if all["a0"] != 30 || all["open"] != 30 {
		t.Fatalf("read_uncommitted saw %v", all)
	}
	c.node(coordinator).start()
}

// TestTxnRawAPIs drives the coordinator with raw requests: the batched AddPartitionsToTxn v4 form
// (add, then VerifyOnly), ListTransactions with filters, EndTxn, DescribeTransactions.
func TestTxnRawAPIs(t *testing.T) {
	b := startBroker(t)
	const topic = "txraw"
	b.createTopic(topic, 2, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := b.client()
	br := cl.Broker(1)
	init := kmsg.NewPtrInitProducerIDRequest()
	init.TransactionalID = kmsg.StringPtr("raw")
	init.TransactionTimeoutMillis = 60000
	ir, err := init.RequestWith(ctx, br)
	if err != nil || ir.ErrorCode != 0 {
		t.Fatalf("InitProducerId: %v %+v", err, ir)
	}
	addReq := func(verify bool, partitions ...int32) *kmsg.AddPartitionsToTxnRequest {
		r := kmsg.NewPtrAddPartitionsToTxnRequest()
		r.Version = 4
		tx := kmsg.NewAddPartitionsToTxnRequestTransaction()
		tx.TransactionalID, tx.ProducerID, tx.ProducerEpoch, tx.VerifyOnly = "raw", ir.ProducerID, ir.ProducerEpoch, verify
		tt := kmsg.NewAddPartitionsToTxnRequestTransactionTopic()
		tt.Topic, tt.Partitions = topic, partitions
		tx.Topics = append(tx.Topics, tt)
		r.Transactions = append(r.Transactions, tx)
		return r
	}
	code := func(r *kmsg.AddPartitionsToTxnResponse) int16 {
		if len(r.Transactions) != 1 || len(r.Transactions[0].Topics) != 1 {
			t.Fatalf("response shape: %+v", r)
		}
		return r.Transactions[0].Topics[0].Partitions[0].ErrorCode
	}
	send := func(r *kmsg.AddPartitionsToTxnRequest) *kmsg.AddPartitionsToTxnResponse {
		resp, err := r.RequestWith(ctx, br)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Version != 4 {
			t.Fatalf("AddPartitionsToTxn answered at v%d, want v4", resp.Version)
		}
		return resp
	}
	if c := code(send(addReq(true, 0))); c != kerr.InvalidTxnState.Code {
		t.Fatalf("verify before adding: code %d, want INVALID_TXN_STATE", c)
	}
	if c := code(send(addReq(false, 0))); c != 0 {
		t.Fatalf("add: code %d", c)
	}
	if c := code(send(addReq(true, 0))); c != 0 {
		t.Fatalf("verify after adding: code %d", c)
	}
	if c := code(send(addReq(true, 1))); c != kerr.InvalidTxnState.Code {
		t.Fatalf("verify of a partition not added: code %d", c)
	}

	list := func(states ...string) []string {
		r := kmsg.NewPtrListTransactionsRequest()
		r.StateFilters = states
		resp, err := r.RequestWith(ctx, br)
		if err != nil || resp.ErrorCode != 0 {
			t.Fatalf("ListTransactions: %v %+v", err, resp)
		}
		var ids []string
		for _, s := range resp.TransactionStates {
			ids = append(ids, s.TransactionalID+":"+s.TransactionState)
		}
		return ids
	}
	if got := list("Ongoing"); fmt.Sprint(got) != "[raw:Ongoing]" {
		t.Fatalf("ListTransactions Ongoing: %v", got)
	}
	if got := list("CompleteCommit"); len(got) != 0 {
		t.Fatalf("ListTransactions CompleteCommit: %v", got)
	}

	end := kmsg.NewPtrEndTxnRequest()
	end.TransactionalID, end.ProducerID, end.ProducerEpoch, end.Commit = "raw", ir.ProducerID, ir.ProducerEpoch, false
	if er, err := end.RequestWith(ctx, br); err != nil || er.ErrorCode != 0 {
		t.Fatalf("EndTxn: %v %+v", err, er)
	}
	if got := list(); fmt.Sprint(got) != "[raw:CompleteAbort]" {
		t.Fatalf("ListTransactions: %v", got)
	}
	dr := kmsg.NewPtrDescribeTransactionsRequest()
	dr.TransactionalIDs = []string{"raw", "unknown"}
	resp, err := dr.RequestWith(ctx, br)
	if err != nil || len(resp.TransactionStates) != 2 {
		t.Fatalf("DescribeTransactions: %v %+v", err, resp)
	}
	if s := resp.TransactionStates[0]; s.ErrorCode != 0 || s.State != "CompleteAbort" || s.ProducerID != ir.ProducerID {
		t.Fatalf("describe raw: %+v", s)
	}
	if s := resp.TransactionStates[1]; s.ErrorCode != kerr.TransactionalIDNotFound.Code {
		t.Fatalf("describe unknown: %+v", s)
	}
}

// TestTxnOffsetCommitRaw: offsets committed in a transaction (AddOffsetsToTxn, TxnOffsetCommit) stay
// pending: a RequireStable OffsetFetch answers UNSTABLE_OFFSET_COMMIT, also after a broker restart
// (pending offsets are rebuilt from __consumer_offsets), until the commit marker makes them the
// group's offsets; an aborted transaction's offsets never count.
func TestTxnOffsetCommitRaw(t *testing.T) {
	b := startBroker(t)
	const topic, groupID = "txoffsets", "txgroup"
	b.createTopic(topic, 1, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var cl *kgo.Client
	connect := func() {
		cl = b.client()
	}
	connect()
	init := kmsg.NewPtrInitProducerIDRequest()
	init.TransactionalID = kmsg.StringPtr("offsets")
	init.TransactionTimeoutMillis = 60000
	ir, err := init.RequestWith(ctx, cl)
	if err != nil || ir.ErrorCode != 0 {
		t.Fatalf("InitProducerId: %v %+v", err, ir)
	}
	inTxn := func(offset int64) {
		t.Helper()
		ao := kmsg.NewPtrAddOffsetsToTxnRequest()
		ao.TransactionalID, ao.ProducerID, ao.ProducerEpoch, ao.Group = "offsets", ir.ProducerID, ir.ProducerEpoch, groupID
		if r, err := ao.RequestWith(ctx, cl); err != nil || r.ErrorCode != 0 {
			t.Fatalf("AddOffsetsToTxn: %v %+v", err, r)
		}
		tc := txnCommitRequest(groupID, topic, ir.ProducerID, ir.ProducerEpoch, offset)
		r, err := tc.RequestWith(ctx, cl)
		if err != nil || r.Topics[0].Partitions[0].ErrorCode != 0 {
			t.Fatalf("TxnOffsetCommit: %v %+v", err, r)
		}
	}
	fetch := func() (int64, int16) {
		t.Helper()
		req := kmsg.NewPtrOffsetFetchRequest()
		req.RequireStable = true
		rg := kmsg.NewOffsetFetchRequestGroup()
		rg.Group = groupID
		rt := kmsg.NewOffsetFetchRequestGroupTopic()
		rt.Topic, rt.Partitions = topic, []int32{0}
		rg.Topics = append(rg.Topics, rt)
		req.Groups = append(req.Groups, rg)
		// Sharded by kgo: the error code is kept per partition, not turned into a request error.
		shards := cl.RequestSharded(ctx, req)
		for _, s := range shards {
			if s.Err != nil {
				t.Fatalf("OffsetFetch: %v", s.Err)
			}
			resp := s.Resp.(*kmsg.OffsetFetchResponse)
			for _, g := range resp.Groups {
				for _, tp := range g.Topics {
					for _, p := range tp.Partitions {
						return p.Offset, p.ErrorCode
					}
				}
			}
		}
		t.Fatal("OffsetFetch: no partition in the answer")
		return 0, 0
	}
	end := func(commit bool) {
		t.Helper()
		er := kmsg.NewPtrEndTxnRequest()
		er.TransactionalID, er.ProducerID, er.ProducerEpoch, er.Commit = "offsets", ir.ProducerID, ir.ProducerEpoch, commit
		if r, err := er.RequestWith(ctx, cl); err != nil || r.ErrorCode != 0 {
			t.Fatalf("EndTxn: %v %+v", err, r)
		}
	}

	inTxn(7)
	if _, code := fetch(); code != kerr.UnstableOffsetCommit.Code {
		t.Fatalf("pending offset: code %d, want UNSTABLE_OFFSET_COMMIT", code)
	}
	b.stop()
	b.start()
	connect()
	if _, code := fetch(); code != kerr.UnstableOffsetCommit.Code {
		t.Fatalf("pending offset after a restart: code %d, want UNSTABLE_OFFSET_COMMIT", code)
	}
	end(true)
	if off, code := fetch(); off != 7 || code != 0 {
		t.Fatalf("after commit: offset %d code %d, want 7", off, code)
	}
	inTxn(9)
	end(false)
	if off, code := fetch(); off != 7 || code != 0 {
		t.Fatalf("after an aborted transaction: offset %d code %d, want 7", off, code)
	}
	// KIP-447: a member of a generation the group never had is refused.
	tc := txnCommitRequest(groupID, topic, ir.ProducerID, ir.ProducerEpoch, 11)
	tc.MemberID, tc.Generation = "stranger", 5
	if r, err := tc.RequestWith(ctx, cl); err != nil || r.Topics[0].Partitions[0].ErrorCode == 0 {
		t.Fatalf("TxnOffsetCommit from an unknown member: %v %+v", err, r)
	}
}

func txnCommitRequest(groupID, topic string, pid int64, epoch int16, offset int64) *kmsg.TxnOffsetCommitRequest {
	tc := kmsg.NewPtrTxnOffsetCommitRequest()
	tc.TransactionalID, tc.Group, tc.ProducerID, tc.ProducerEpoch, tc.Generation = "offsets", groupID, pid, epoch, -1
	tt := kmsg.NewTxnOffsetCommitRequestTopic()
	tt.Topic = topic
	tp := kmsg.NewTxnOffsetCommitRequestTopicPartition()
	tp.Partition, tp.Offset = 0, offset
	tt.Partitions = append(tt.Partitions, tp)
	tc.Topics = append(tc.Topics, tt)
	return tc
}
