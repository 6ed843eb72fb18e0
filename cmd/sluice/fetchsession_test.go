package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicebroker/sluice/internal/kafkatest"
)

// TestFetchSessionsFranzGo consumes with franz-go, which uses fetch sessions (KIP-227) whenever the
// broker answers with a session id, while records arrive in waves on 8 partitions: every record must
// arrive once, in order, and the fetches after the first must be incremental (much smaller requests).
func TestFetchSessionsFranzGo(t *testing.T) {
	b := startBroker(t)
	const topic, partitions, waves, perWave = "sessions", 8, 5, 40
	b.createTopic(topic, partitions, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	var mu sync.Mutex
	var fetchSizes []int // bytes of each Fetch request written
	hook := fetchWriteHook(func(n int) { mu.Lock(); fetchSizes = append(fetchSizes, n); mu.Unlock() })
	cons := b.client(kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.WithHooks(hook),
		kgo.FetchMaxWait(200*time.Millisecond))
	prod := b.client(kgo.RecordPartitioner(kgo.ManualPartitioner()))

	next := map[int32]int64{} // per partition: the next offset expected
	got := 0
	for w := range waves {
		var recs []*kgo.Record
		for i := range perWave {
			recs = append(recs, &kgo.Record{Topic: topic, Partition: int32(i % partitions), Value: []byte(fmt.Sprintf("%d-%d", w, i))})
		}
		if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		for got < (w+1)*perWave {
			fs := cons.PollFetches(ctx)
			if ctx.Err() != nil {
				t.Fatalf("wave %d: consumed %d of %d", w, got, (w+1)*perWave)
			}
			fs.EachError(func(topic string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", topic, p, err) })
			fs.EachRecord(func(r *kgo.Record) {
				if r.Offset != next[r.Partition] {
					t.Fatalf("partition %d: offset %d, want %d (a record lost or repeated)", r.Partition, r.Offset, next[r.Partition])
				}
				next[r.Partition]++
				got++
			})
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(fetchSizes) < 3 {
		t.Fatalf("%d fetches", len(fetchSizes))
	}
	full, smallest := fetchSizes[0], slices.Min(fetchSizes[1:])
	t.Logf("fetch requests: %d, first %d bytes, smallest later %d bytes", len(fetchSizes), full, smallest)
	if smallest*2 > full {
		t.Fatalf("no incremental fetch: first request %d bytes, smallest later one %d", full, smallest)
	}
}

// fetchWriteHook reports the size of each Fetch request a client writes.
type fetchWriteHook func(bytes int)

func (h fetchWriteHook) OnBrokerWrite(_ kgo.BrokerMetadata, key int16, bytes int, _, _ time.Duration, err error) {
	if key == kmsg.Fetch.Int16() && err == nil {
		h(bytes)
	}
}

// sessionClient sends raw Fetch requests of one session.
type sessionClient struct {
	t     *testing.T
	cl    *kgo.Client
	topic string
	id    [16]byte // the topic's id: Fetch v13+ names topics by id
}

// topicID is a topic's id as the broker's metadata gives it (Fetch v13+ names topics by it).
func topicID(t testing.TB, b *testBroker, topic string) [16]byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	td, err := b.admin().ListTopics(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	d, ok := td[topic]
	if !ok || d.Err != nil {
		t.Fatalf("topic %s: %v", topic, d.Err)
	}
	return d.ID
}

// fetch sends a Fetch v12 with the session fields and the partitions given (partition → offset), and
// forgets the partitions in forget. It returns the response and its partitions by number.
func (s *sessionClient) fetch(id, epoch int32, parts map[int32]int64, forget []int32) (*kmsg.FetchResponse, map[int32]kmsg.FetchResponseTopicPartition) {
	s.t.Helper()
	req := kmsg.NewPtrFetchRequest()
	req.SessionID, req.SessionEpoch = id, epoch
	req.MaxWaitMillis, req.MinBytes, req.MaxBytes = 100, 1, 1<<20
	if len(parts) > 0 {
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic, rt.TopicID = s.topic, s.id
		for _, p := range slices.Sorted(maps.Keys(parts)) {
			rp := kmsg.NewFetchRequestTopicPartition()
			rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes, rp.CurrentLeaderEpoch = p, parts[p], 1<<20, -1
			rt.Partitions = append(rt.Partitions, rp)
		}
		req.Topics = append(req.Topics, rt)
	}
	if len(forget) > 0 {
		ft := kmsg.NewFetchRequestForgottenTopic()
		ft.Topic, ft.TopicID, ft.Partitions = s.topic, s.id, forget
		req.ForgottenTopics = append(req.ForgottenTopics, ft)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := req.RequestWith(ctx, s.cl.Broker(1))
	if err != nil {
		s.t.Fatal(err)
	}
	byPart := map[int32]kmsg.FetchResponseTopicPartition{}
	for _, rt := range resp.Topics {
		if rt.Topic != s.topic && rt.TopicID != s.id {
			s.t.Fatalf("response names topic %q, id %x", rt.Topic, rt.TopicID)
		}
		for _, rp := range rt.Partitions {
			if _, dup := byPart[rp.Partition]; dup {
				s.t.Fatalf("partition %d twice in one response", rp.Partition)
			}
			byPart[rp.Partition] = rp
		}
	}
	return resp, byPart
}

// TestFetchSessionsIncremental drives one session by hand: a full fetch opens it; incremental
// fetches answer only the partitions with something new; partitions are added, updated and
// forgotten; a wrong epoch, an unknown session and a closed session get Kafka's errors.
func TestFetchSessionsIncremental(t *testing.T) {
	b := startBroker(t)
	const topic = "incremental"
	b.createTopic(topic, 3, nil)
	cl := b.client()
	s := &sessionClient{t: t, cl: cl, topic: topic, id: topicID(t, b, topic)}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	produce := func(p int32) {
		t.Helper()
		if code := rawProduce(ctx, t, cl, topic, p, kafkatest.Batch([]byte("x"))); code != 0 {
			t.Fatalf("produce to %d: error %d", p, code)
		}
	}
	expectParts := func(step string, got map[int32]kmsg.FetchResponseTopicPartition, want ...int32) {
		t.Helper()
		have := slices.Sorted(maps.Keys(got))
		if !slices.Equal(have, want) {
			t.Fatalf("%s: response partitions %v, want %v", step, have, want)
		}
	}

	// A full fetch of partitions 0 and 1 opens a session; both are answered.
	resp, parts := s.fetch(0, 0, map[int32]int64{0: 0, 1: 0}, nil)
	if resp.ErrorCode != 0 || resp.SessionID == 0 {
		t.Fatalf("full fetch: error %d, session %d: no session opened", resp.ErrorCode, resp.SessionID)
	}
	id := resp.SessionID
	expectParts("full fetch", parts, 0, 1)

	// Nothing changed: an incremental fetch answers no partition.
	_, parts = s.fetch(id, 1, nil, nil)
	expectParts("incremental, nothing new", parts, nil...)

	// A record on partition 0: only partition 0 is answered, with it.
	produce(0)
	_, parts = s.fetch(id, 2, nil, nil)
	expectParts("incremental after a produce to 0", parts, 0)
	if p := parts[0]; p.HighWatermark != 1 || len(p.RecordBatches) == 0 {
		t.Fatalf("partition 0: high watermark %d, %d record bytes", p.HighWatermark, len(p.RecordBatches))
	}

	// The client moves partition 0's offset to 1: nothing new.
	_, parts = s.fetch(id, 3, map[int32]int64{0: 1}, nil)
	expectParts("incremental, offset updated", parts, nil...)

	// Partition 2 joins the session: answered the first time, then only on news.
	_, parts = s.fetch(id, 4, map[int32]int64{2: 0}, nil)
	expectParts("incremental, partition 2 added", parts, 2)
	_, parts = s.fetch(id, 5, nil, nil)
	expectParts("incremental after the add", parts, nil...)

	// Partition 1 is forgotten: its records are no longer answered; partition 2's are.
	_, parts = s.fetch(id, 6, nil, []int32{1})
	expectParts("incremental, partition 1 forgotten", parts, nil...)
	produce(1)
	produce(2)
	_, parts = s.fetch(id, 7, nil, nil)
	expectParts("incremental after produces to 1 and 2", parts, 2)

	// A wrong epoch and an unknown session get their errors, without topics.
	if resp, parts := s.fetch(id, 99, nil, nil); resp.ErrorCode != kerr.InvalidFetchSessionEpoch.Code || len(parts) != 0 {
		t.Fatalf("wrong epoch: error %d, %d partitions, want INVALID_FETCH_SESSION_EPOCH", resp.ErrorCode, len(parts))
	}
	if resp, _ := s.fetch(id^0x5a5a5a, 1, nil, nil); resp.ErrorCode != kerr.FetchSessionIDNotFound.Code {
		t.Fatalf("unknown session: error %d, want FETCH_SESSION_ID_NOT_FOUND", resp.ErrorCode)
	}

	// Epoch -1 closes the session and fetches without one.
	resp, parts = s.fetch(id, -1, map[int32]int64{0: 0}, nil)
	if resp.ErrorCode != 0 || resp.SessionID != 0 {
		t.Fatalf("closing fetch: error %d, session %d, want a sessionless answer", resp.ErrorCode, resp.SessionID)
	}
	expectParts("closing fetch", parts, 0)
	if resp, _ := s.fetch(id, 8, nil, nil); resp.ErrorCode != kerr.FetchSessionIDNotFound.Code {
		t.Fatalf("closed session: error %d, want FETCH_SESSION_ID_NOT_FOUND", resp.ErrorCode)
	}
}

// TestFetchSessionCacheEviction fills a two-slot session cache: a client that opens a new session on
// every poll gets no session rather than evicting a consumer's, and only a larger session takes the
// slot of a smaller one.
func TestFetchSessionCacheEviction(t *testing.T) {
	b := startBroker(t, "--fetch-session-cache-slots", "2")
	const topic = "evict"
	b.createTopic(topic, 3, nil)
	s := &sessionClient{t: t, cl: b.client(), topic: topic, id: topicID(t, b, topic)}

	resp, _ := s.fetch(0, 0, map[int32]int64{0: 0, 1: 0}, nil) // the consumer: two partitions
	consumer := resp.SessionID
	resp, _ = s.fetch(0, 0, map[int32]int64{0: 0}, nil) // the churner's first session takes the last slot
	small := resp.SessionID
	if consumer == 0 || small == 0 {
		t.Fatalf("sessions %d and %d: the cache has two slots", consumer, small)
	}
	for i := range 5 { // the churner opens a session on every poll
		if resp, _ := s.fetch(0, 0, map[int32]int64{2: 0}, nil); resp.SessionID != 0 {
			t.Fatalf("churn %d: got session %d from a full cache of sessions no smaller", i, resp.SessionID)
		}
	}
	epoch := int32(1)
	if resp, _ := s.fetch(consumer, epoch, nil, nil); resp.ErrorCode != 0 {
		t.Fatalf("the consumer's session after the churn: error %d", resp.ErrorCode)
	}
	epoch++
	// A three-partition session evicts the smallest (the churner's one-partition session).
	if resp, _ := s.fetch(0, 0, map[int32]int64{0: 0, 1: 0, 2: 0}, nil); resp.SessionID == 0 {
		t.Fatal("a larger session did not get a slot")
	}
	if resp, _ := s.fetch(small, 1, nil, nil); resp.ErrorCode != kerr.FetchSessionIDNotFound.Code {
		t.Fatalf("the evicted session: error %d, want FETCH_SESSION_ID_NOT_FOUND", resp.ErrorCode)
	}
	if resp, _ := s.fetch(consumer, epoch, nil, nil); resp.ErrorCode != 0 {
		t.Fatalf("the consumer's session: error %d", resp.ErrorCode)
	}
}

// TestFetchByTopicID fetches by topic id (Fetch v13+, KIP-516): the topic's id reads its records; a
// random id, and the old id of a topic deleted and created again under the same name, get
// UNKNOWN_TOPIC_ID; so does a Produce v13 by a random id.
func TestFetchByTopicID(t *testing.T) {
	b := startBroker(t)
	const topic = "by-id"
	b.createTopic(topic, 1, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl := b.client()
	if code := rawProduce(ctx, t, cl, topic, 0, kafkatest.Batch([]byte("x"))); code != 0 {
		t.Fatalf("produce: error %d", code)
	}
	old := topicID(t, b, topic)
	fetch := func(id [16]byte) (int16, int) {
		t.Helper()
		s := &sessionClient{t: t, cl: cl, topic: topic, id: id}
		resp, parts := s.fetch(0, -1, map[int32]int64{0: 0}, nil)
		if resp.Version < 13 {
			t.Fatalf("Fetch v%d: the broker does not serve topic ids", resp.Version)
		}
		if len(resp.Topics) != 1 || resp.Topics[0].TopicID != id {
			t.Fatalf("response topics %+v, want the id asked", resp.Topics)
		}
		return parts[0].ErrorCode, len(parts[0].RecordBatches)
	}
	if code, n := fetch(old); code != 0 || n == 0 {
		t.Fatalf("fetch by id: error %d, %d bytes", code, n)
	}
	if code, _ := fetch([16]byte{9, 9, 9}); code != kerr.UnknownTopicID.Code {
		t.Fatalf("unknown id: error %d, want UNKNOWN_TOPIC_ID", code)
	}
	// Produce v13 by an unknown id.
	preq := kmsg.NewPtrProduceRequest()
	preq.Acks, preq.TimeoutMillis = -1, 5000
	prt := kmsg.NewProduceRequestTopic()
	prt.TopicID = [16]byte{9, 9, 9}
	prp := kmsg.NewProduceRequestTopicPartition()
	prp.Records = kafkatest.Batch([]byte("y"))
	prt.Partitions = append(prt.Partitions, prp)
	preq.Topics = append(preq.Topics, prt)
	presp, err := preq.RequestWith(ctx, cl.Broker(1))
	if err != nil {
		t.Fatal(err)
	}
	if presp.Version < 13 || presp.Topics[0].Partitions[0].ErrorCode != kerr.UnknownTopicID.Code {
		t.Fatalf("Produce v%d by an unknown id: error %d, want UNKNOWN_TOPIC_ID", presp.Version, presp.Topics[0].Partitions[0].ErrorCode)
	}

	if _, err := b.admin().DeleteTopic(ctx, topic); err != nil {
		t.Fatal(err)
	}
	b.createTopic(topic, 1, nil)
	if code, _ := fetch(old); code != kerr.UnknownTopicID.Code {
		t.Fatalf("stale id after recreation: error %d, want UNKNOWN_TOPIC_ID", code)
	}
	if code, _ := fetch(topicID(t, b, topic)); code != 0 {
		t.Fatalf("new id: error %d", code)
	}
}
