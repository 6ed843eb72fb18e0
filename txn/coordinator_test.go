package txn

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicebroker/sluice/batch"
)

type memStore struct {
	mu   sync.Mutex
	recs []Record
}

func (s *memStore) Append(_ context.Context, _ string, recs []Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Round-trip through the batch encoding, as the log would.
	_, err := batch.Decode(batch.Encode(recs, time.Now().UnixMilli(), 0, batch.NoProducer), func(_ batch.Info, r Record) { s.recs = append(s.recs, r) })
	return err
}

type markerCall struct {
	pid    int64
	epoch  int16
	commit bool
	parts  []TopicPartition
}

type fakeMarkers struct {
	mu    sync.Mutex
	fail  bool
	calls []markerCall
}

func (m *fakeMarkers) WriteMarkers(_ context.Context, _ string, pid int64, epoch int16, commit bool, parts []TopicPartition) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail {
		return kerr.NotLeaderForPartition
	}
	m.calls = append(m.calls, markerCall{pid, epoch, commit, parts})
	return nil
}

func (m *fakeMarkers) last() markerCall {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.calls) == 0 {
		return markerCall{pid: -1}
	}
	return m.calls[len(m.calls)-1]
}

func newTest(t *testing.T, store *memStore, mk *fakeMarkers) *Coordinator {
	var next int64 = 100
	var mu sync.Mutex
	c := New(Config{Tick: 10 * time.Millisecond, AllocateID: func(context.Context) (int64, error) {
		mu.Lock()
		defer mu.Unlock()
		next++
		return next, nil
	}}, store, mk)
	t.Cleanup(c.Close)
	return c
}

var ctx = context.Background()

func waitState(t *testing.T, c *Coordinator, id string, want kmsg.TransactionState) Info {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, ok := c.Describe(id)
		if ok && info.State == want {
			return info
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: state %v, want %v", id, info.State, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestInitFencesAndAbortsOpenTransaction(t *testing.T) {
	store, mk := &memStore{}, &fakeMarkers{}
	c := newTest(t, store, mk)
	pid, epoch, code := c.InitProducerID(ctx, "a", 60000, -1, -1)
	if code != 0 || epoch != 0 {
		t.Fatalf("init: %d %d %d", pid, epoch, code)
	}
	parts := []TopicPartition{{"t", 0}, {"t", 1}}
	if code := c.AddPartitions(ctx, "a", pid, epoch, parts); code != 0 {
		t.Fatalf("add: %d", code)
	}
	pid2, epoch2, code := c.InitProducerID(ctx, "a", 60000, -1, -1)
	if code != 0 || pid2 != pid || epoch2 != 2 {
		t.Fatalf("re-init: pid %d epoch %d code %d, want pid %d epoch 2", pid2, epoch2, code, pid)
	}
	if m := mk.last(); m.pid != pid || m.epoch != 1 || m.commit || len(m.parts) != 2 {
		t.Fatalf("abort markers of the fenced instance: %+v", m)
	}
	if code := c.EndTxn(ctx, "a", pid, epoch, true); code != kerr.ProducerFenced.Code {
		t.Fatalf("fenced commit: code %d", code)
	}
	if code := c.AddPartitions(ctx, "a", pid, epoch, parts); code != kerr.ProducerFenced.Code {
		t.Fatalf("fenced add: code %d", code)
	}
	// KIP-360: a producer naming an old epoch is fenced; naming the current one bumps it.
	if _, _, code := c.InitProducerID(ctx, "a", 60000, pid, epoch); code != kerr.ProducerFenced.Code {
		t.Fatalf("init with a stale epoch: code %d", code)
	}
	if _, e, code := c.InitProducerID(ctx, "a", 60000, pid, epoch2); code != 0 || e != epoch2+1 {
		t.Fatalf("init with the current epoch: epoch %d code %d", e, code)
	}
	if _, _, code := c.InitProducerID(ctx, "b", 0, -1, -1); code != kerr.InvalidTransactionTimeout.Code {
		t.Fatalf("zero timeout: code %d", code)
	}
}

func TestEndTxnStates(t *testing.T) {
	store, mk := &memStore{}, &fakeMarkers{}
	c := newTest(t, store, mk)
	pid, epoch, _ := c.InitProducerID(ctx, "e", 60000, -1, -1)
	if code := c.EndTxn(ctx, "e", pid, epoch, true); code != kerr.InvalidTxnState.Code {
		t.Fatalf("end of an empty transaction: code %d", code)
	}
	c.AddPartitions(ctx, "e", pid, epoch, []TopicPartition{{"t", 3}})
	if code := c.EndTxn(ctx, "e", pid+1, epoch, true); code != kerr.InvalidProducerIDMapping.Code {
		t.Fatalf("wrong producer id: code %d", code)
	}
	if code := c.EndTxn(ctx, "e", pid, epoch, true); code != 0 {
		t.Fatalf("commit: code %d", code)
	}
	if m := mk.last(); !m.commit || m.epoch != epoch || len(m.parts) != 1 {
		t.Fatalf("commit markers: %+v", m)
	}
	if code := c.EndTxn(ctx, "e", pid, epoch, true); code != 0 {
		t.Fatalf("retried commit: code %d", code)
	}
	if code := c.EndTxn(ctx, "e", pid, epoch, false); code != kerr.InvalidTxnState.Code {
		t.Fatalf("abort after commit: code %d", code)
	}
	if info, _ := c.Describe("e"); info.State != CompleteCommit || len(info.Parts) != 0 {
		t.Fatalf("after commit: %+v", info)
	}
}

// A decided transaction whose markers fail stays prepared (clients get CONCURRENT_TRANSACTIONS) and
// is completed by the timers once markers work; a coordinator rebuilt from the log does the same.
func TestPreparedCompletesAfterMarkerFailureAndReplay(t *testing.T) {
	store, mk := &memStore{}, &fakeMarkers{}
	c := newTest(t, store, mk)
	pid, epoch, _ := c.InitProducerID(ctx, "p", 60000, -1, -1)
	c.AddPartitions(ctx, "p", pid, epoch, []TopicPartition{{"t", 0}})
	mk.mu.Lock()
	mk.fail = true
	mk.mu.Unlock()
	if code := c.EndTxn(ctx, "p", pid, epoch, true); code != 0 {
		t.Fatalf("commit decided: code %d", code)
	}
	if info, _ := c.Describe("p"); info.State != PrepareCommit {
		t.Fatalf("state %v, want PrepareCommit", info.State)
	}
	if code := c.AddPartitions(ctx, "p", pid, epoch, []TopicPartition{{"t", 1}}); code != kerr.ConcurrentTransactions.Code {
		t.Fatalf("add while prepared: code %d", code)
	}

	// Take-over: a new coordinator replays the log and finishes the commit.
	c2 := newTest(t, store, mk)
	store.mu.Lock()
	for _, r := range store.recs {
		c2.Replay(r)
	}
	store.mu.Unlock()
	c.Close() // the old coordinator stops retrying: only the new one may finish it
	if info, _ := c2.Describe("p"); info.State != PrepareCommit || info.PID != pid {
		t.Fatalf("replayed: %+v", info)
	}
	mk.mu.Lock()
	mk.fail = false
	mk.mu.Unlock()
	waitState(t, c2, "p", CompleteCommit)
	if m := mk.last(); !m.commit || m.pid != pid || len(m.parts) != 1 {
		t.Fatalf("markers after take-over: %+v", m)
	}
}

func TestTimeoutAbortsAndFences(t *testing.T) {
	store, mk := &memStore{}, &fakeMarkers{}
	c := newTest(t, store, mk)
	pid, epoch, _ := c.InitProducerID(ctx, "slow", 50, -1, -1)
	c.AddPartitions(ctx, "slow", pid, epoch, []TopicPartition{{"t", 0}})
	info := waitState(t, c, "slow", CompleteAbort)
	if info.Epoch != epoch+1 {
		t.Fatalf("epoch after the timeout abort %d, want %d", info.Epoch, epoch+1)
	}
	if m := mk.last(); m.commit || m.epoch != epoch+1 {
		t.Fatalf("abort markers: %+v", m)
	}
	if code := c.EndTxn(ctx, "slow", pid, epoch, true); code != kerr.ProducerFenced.Code {
		t.Fatalf("commit after the timeout: code %d", code)
	}
	if code := c.EndTxn(ctx, "slow", pid, epoch, true); !errors.Is(kerr.ErrorForCode(code), kerr.ProducerFenced) {
		t.Fatalf("commit after the timeout: code %d", code)
	}
}

func TestRecordFormatRoundTrip(t *testing.T) {
	in := &txn{id: "x", pid: 7, epoch: 3, timeoutMs: 1000, state: Ongoing, start: time.UnixMilli(1234), lastUpdate: time.UnixMilli(5678),
		parts: map[TopicPartition]struct{}{{"b", 1}: {}, {"a", 2}: {}, {"a", 0}: {}}}
	id, out, ok := decodeRecord(encodeRecord(in))
	if !ok || id != "x" || out.pid != 7 || out.epoch != 3 || out.timeoutMs != 1000 || out.state != Ongoing ||
		!out.start.Equal(in.start) || len(out.parts) != 3 {
		t.Fatalf("round trip: %+v", out)
	}
	if got := out.sortedParts(); got[0] != (TopicPartition{"a", 0}) || got[2] != (TopicPartition{"b", 1}) {
		t.Fatalf("order: %v", got)
	}
}

func TestIdleIDExpires(t *testing.T) {
	store, mk := &memStore{}, &fakeMarkers{}
	var next int64
	c := New(Config{Tick: 10 * time.Millisecond, IDExpiration: 50 * time.Millisecond,
		AllocateID: func(context.Context) (int64, error) { next++; return next, nil }}, store, mk)
	defer c.Close()
	pid, epoch, _ := c.InitProducerID(ctx, "idle", 60000, -1, -1)
	if code := c.AddPartitions(ctx, "idle", pid, epoch, []TopicPartition{{"t", 0}}); code != 0 {
		t.Fatal(code)
	}
	// An open transaction never expires; it times out (60 s here) first.
	time.Sleep(100 * time.Millisecond)
	if _, ok := c.Describe("idle"); !ok {
		t.Fatal("an id with an open transaction expired")
	}
	c.EndTxn(ctx, "idle", pid, epoch, false)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, ok := c.Describe("idle"); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("idle id never expired")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The tombstone is in the log: a replay forgets the id too.
	c2 := New(Config{AllocateID: c.cfg.AllocateID}, store, mk)
	defer c2.Close()
	store.mu.Lock()
	for _, r := range store.recs {
		c2.Replay(r)
	}
	store.mu.Unlock()
	if _, ok := c2.Describe("idle"); ok {
		t.Fatal("replay brought the expired id back")
	}
}

// A take-over replays one __transaction_state partition and keeps only that partition's ids, so that
// unloading the partition later drops everything its load brought in.
func TestReplayBatchesKeepsThePartitionsIDs(t *testing.T) {
	store, mk := &memStore{}, &fakeMarkers{}
	c := newTest(t, store, mk)
	for _, id := range []string{"mine", "other"} {
		if _, _, code := c.InitProducerID(ctx, id, 60000, -1, -1); code != 0 {
			t.Fatalf("init %s: %d", id, code)
		}
	}
	store.mu.Lock()
	log := batch.Encode(store.recs, time.Now().UnixMilli(), 0, batch.NoProducer)
	store.mu.Unlock()
	c2 := newTest(t, &memStore{}, mk)
	if next, err := c2.ReplayBatches(log, func(id string) bool { return id == "mine" }); err != nil || next <= 0 {
		t.Fatalf("replay: next %d err %v", next, err)
	}
	if _, ok := c2.Describe("mine"); !ok {
		t.Fatal("the partition's id was not replayed")
	}
	if _, ok := c2.Describe("other"); ok {
		t.Fatal("an id of another partition was replayed")
	}
}
