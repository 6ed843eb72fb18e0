package quorum

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/config"
	"github.com/lni/dragonboat/v4/plugin/tan"
	sm "github.com/lni/dragonboat/v4/statemachine"

	"github.com/sluicebroker/sluice/internal/testcluster"
)

// freeAddr returns a loopback address with a port that was free a moment ago.
var freeAddr = testcluster.MustFreeAddr

func newTestHost(t testing.TB, id uint64, addr, dir string) *Host {
	t.Helper()
	h, err := NewHost(HostConfig{NodeID: id, RaftAddr: addr, DataDir: dir, SnapshotEntries: 10, CompactionOverhead: 5, SnapshotInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// counterSM is a trivial on-disk state machine: it sums 8-byte big-endian commands and persists
// (sum, applied index) to a file on Sync, as the partition state machine persists its segment.
type counterSM struct {
	path string

	mu        sync.Mutex
	sum       uint64
	applied   uint64
	opened    uint64 // index Open returned
	minUpdate uint64 // lowest index passed to Update since Open (0: none)
	updates   int
}

// counterSMs records the state machine instances by shard so a test can inspect them.
type counterSMs struct {
	mu   sync.Mutex
	dir  string
	last map[uint64]*counterSM
}

func newCounterSMs(dir string) *counterSMs {
	return &counterSMs{dir: dir, last: map[uint64]*counterSM{}}
}

func (c *counterSMs) create(shardID, replicaID uint64) sm.IOnDiskStateMachine {
	s := &counterSM{path: filepath.Join(c.dir, fmt.Sprintf("sm-%d-%d", shardID, replicaID))}
	c.mu.Lock()
	c.last[shardID] = s
	c.mu.Unlock()
	return s
}

func (c *counterSMs) get(shardID uint64) *counterSM {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last[shardID]
}

func (s *counterSM) Open(<-chan struct{}) (uint64, error) {
	b, err := os.ReadFile(s.path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sum = binary.BigEndian.Uint64(b[0:8])
	s.applied = binary.BigEndian.Uint64(b[8:16])
	s.opened = s.applied
	return s.applied, nil
}

func (s *counterSM) Update(ents []sm.Entry) ([]sm.Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range ents {
		e := &ents[i]
		if s.minUpdate == 0 || e.Index < s.minUpdate {
			s.minUpdate = e.Index
		}
		s.updates++
		if len(e.Cmd) == 8 {
			s.sum += binary.BigEndian.Uint64(e.Cmd)
		}
		s.applied = e.Index
		e.Result = sm.Result{Value: s.sum}
	}
	return ents, nil
}

func (s *counterSM) Lookup(any) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sum, nil
}

func (s *counterSM) Sync() error {
	s.mu.Lock()
	var b [16]byte
	binary.BigEndian.PutUint64(b[0:8], s.sum)
	binary.BigEndian.PutUint64(b[8:16], s.applied)
	s.mu.Unlock()
	tmp := s.path + ".tmp"
	if err := os.WriteFile(tmp, b[:], 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, s.path)
}

// PrepareSnapshot captures the state at the snapshot's index: SaveSnapshot runs concurrently with
// Update, and a sum read there could include entries after the index, which a replica recovering
// from the snapshot would then apply a second time.
func (s *counterSM) PrepareSnapshot() (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b [16]byte
	binary.BigEndian.PutUint64(b[0:8], s.sum)
	binary.BigEndian.PutUint64(b[8:16], s.applied)
	return b, nil
}

func (s *counterSM) SaveSnapshot(ctx any, w io.Writer, _ <-chan struct{}) error {
	b := ctx.([16]byte)
	_, err := w.Write(b[:])
	return err
}

func (s *counterSM) RecoverFromSnapshot(r io.Reader, _ <-chan struct{}) error {
	var b [16]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return err
	}
	s.mu.Lock()
	s.sum = binary.BigEndian.Uint64(b[0:8])
	s.applied = binary.BigEndian.Uint64(b[8:16])
	s.mu.Unlock()
	return s.Sync()
}

func (s *counterSM) Close() error { return nil }

func cmdOf(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}

func TestShardProposeRestart(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	sms := newCounterSMs(dir)
	const shard = FirstPartitionShardID

	h := newTestHost(t, 1, addr, filepath.Join(dir, "raft"))
	if err := h.StartOnDiskShard(shard, map[uint64]string{1: addr}, false, sms.create); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var want uint64
	for i := uint64(1); i <= 25; i++ {
		want += i
		res, err := h.Propose(ctx, shard, cmdOf(i))
		if err != nil {
			t.Fatalf("propose %d: %v", i, err)
		}
		if res.Value != want {
			t.Fatalf("propose %d: result %d, want %d", i, res.Value, want)
		}
	}
	// Pipelined asynchronous proposals: every callback fires once with a result.
	var wg sync.WaitGroup
	var failed atomic.Int32
	for i := uint64(26); i <= 125; i++ {
		want += i
		wg.Add(1)
		err := h.ProposeAsync(shard, cmdOf(i), 10*time.Second, func(_ sm.Result, err error) {
			if err != nil {
				failed.Add(1)
			}
			wg.Done()
		})
		if err != nil {
			t.Fatalf("propose async %d: %v", i, err)
		}
	}
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d async proposals failed", n)
	}
	if id, term, ok := h.LeaderInfo(shard); !ok || id != 1 || term == 0 {
		t.Fatalf("LeaderInfo = %d, %d, %v", id, term, ok)
	}
	if got := sms.get(shard).sum; got != want {
		t.Fatalf("sum %d, want %d", got, want)
	}
	h.Close()

	// Restart on the same dir with no members: dragonboat remembers the shard. The state machine
	// reopens at its synced index; only entries above it are replayed.
	h = newTestHost(t, 1, addr, filepath.Join(dir, "raft"))
	defer h.Close()
	if err := h.StartOnDiskShard(shard, nil, false, sms.create); err != nil {
		t.Fatal(err)
	}
	want += 1000
	res, err := h.Propose(ctx, shard, cmdOf(1000))
	if err != nil {
		t.Fatal(err)
	}
	if res.Value != want {
		t.Fatalf("after restart: result %d, want %d", res.Value, want)
	}
	s := sms.get(shard)
	s.mu.Lock()
	opened, minUpdate := s.opened, s.minUpdate
	s.mu.Unlock()
	if opened == 0 {
		t.Fatalf("state machine never synced before restart")
	}
	if minUpdate <= opened {
		t.Fatalf("entry %d replayed although Open returned %d", minUpdate, opened)
	}
	t.Logf("reopened at index %d, first replayed index %d", opened, minUpdate)
}

func TestShardErrors(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	h := newTestHost(t, 1, addr, filepath.Join(dir, "raft"))
	defer h.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if _, err := h.Propose(ctx, 4242, cmdOf(1)); !errors.Is(err, ErrShardNotFound) {
		t.Fatalf("propose to unknown shard: %v", err)
	}
	if err := h.ProposeAsync(4242, cmdOf(1), time.Second, func(sm.Result, error) {}); !errors.Is(err, ErrShardNotFound) {
		t.Fatalf("propose async to unknown shard: %v", err)
	}
	sms := newCounterSMs(dir)
	const shard = FirstPartitionShardID + 7
	if err := h.StartOnDiskShard(shard, map[uint64]string{1: addr}, false, sms.create); err != nil {
		t.Fatal(err)
	}
	if err := h.StartOnDiskShard(shard, map[uint64]string{1: addr}, false, sms.create); err == nil {
		t.Fatal("starting a running shard again succeeded")
	}
	if _, err := h.WaitLeader(ctx, shard); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Propose(ctx, shard, cmdOf(1)); err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(ctx, time.Nanosecond)
	<-short.Done()
	if _, err := h.Propose(short, shard, cmdOf(1)); !errors.Is(err, ErrTimeout) {
		t.Fatalf("propose with expired ctx: %v", err)
	}
	cancelShort()
	if err := h.StopShard(shard); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Propose(ctx, shard, cmdOf(1)); !errors.Is(err, ErrShardNotFound) {
		t.Fatalf("propose to stopped shard: %v", err)
	}
	if err := h.RemoveShardData(shard); err != nil {
		t.Fatal(err)
	}
	if err := h.StartOnDiskShard(shard, map[uint64]string{1: addr}, false, sms.create); err == nil {
		t.Fatal("restarting a removed shard succeeded")
	}
}

// TestShardThreeReplicas: a partition shard replicated on three Hosts. Only the leader accepts
// proposals; every replica applies them; after the leader stops, another takes over and the
// state carries on.
func TestShardThreeReplicas(t *testing.T) {
	dir := t.TempDir()
	members := map[uint64]string{}
	for id := uint64(1); id <= 3; id++ {
		members[id] = freeAddr(t)
	}
	const shard = FirstPartitionShardID + 1
	hosts := map[uint64]*Host{}
	sms := map[uint64]*counterSMs{}
	for id := uint64(1); id <= 3; id++ {
		h := newTestHost(t, id, members[id], filepath.Join(dir, fmt.Sprint(id), "raft"))
		defer h.Close()
		sms[id] = newCounterSMs(filepath.Join(dir, fmt.Sprint(id)))
		if err := h.StartOnDiskShard(shard, members, false, sms[id].create); err != nil {
			t.Fatal(err)
		}
		hosts[id] = h
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	leaderOf := func() (*Host, uint64) {
		t.Helper()
		for ctx.Err() == nil {
			for id, h := range hosts {
				if h.IsLeader(shard) {
					return h, id
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatal("no leader")
		return nil, 0
	}
	var want uint64
	propose := func(v uint64) {
		t.Helper()
		for {
			h, _ := leaderOf()
			res, err := h.Propose(ctx, shard, cmdOf(v))
			if errors.Is(err, ErrNotLeader) {
				continue // leadership moved between the check and the proposal
			}
			if err != nil {
				t.Fatalf("propose %d: %v", v, err)
			}
			want += v
			if res.Value != want {
				t.Fatalf("propose %d: result %d, want %d", v, res.Value, want)
			}
			return
		}
	}
	for v := uint64(1); v <= 20; v++ {
		propose(v)
	}
	_, leaderID := leaderOf()
	for id, h := range hosts {
		if id == leaderID {
			continue
		}
		if _, err := h.Propose(ctx, shard, cmdOf(1)); !errors.Is(err, ErrNotLeader) {
			t.Fatalf("propose on follower %d: %v", id, err)
		}
		if err := h.ProposeAsync(shard, cmdOf(1), time.Second, func(sm.Result, error) {}); !errors.Is(err, ErrNotLeader) {
			t.Fatalf("propose async on follower %d: %v", id, err)
		}
	}

	// Preferred-leader style transfer to a chosen follower.
	// A transfer is best effort (dragonboat drops it if leadership changes meanwhile): ask the
	// current leader again until the target leads.
	target := leaderID%3 + 1
	for !hosts[target].IsLeader(shard) {
		cur, _ := leaderOf()
		if err := cur.TransferLeader(shard, target); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 100 && !hosts[target].IsLeader(shard); i++ {
			time.Sleep(10 * time.Millisecond)
		}
		if ctx.Err() != nil {
			t.Fatalf("leadership never moved to %d", target)
		}
	}
	leader, leaderID := hosts[target], target
	m, err := leader.Membership(ctx, shard)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(m.Voters, members) {
		t.Fatalf("membership %v, want %v", m.Voters, members)
	}

	leader.Close()
	delete(hosts, leaderID)
	for v := uint64(21); v <= 30; v++ {
		propose(v)
	}

	// Replace the dead replica: remove it, add node 4, which joins and catches up (from a
	// snapshot: the log was compacted every 10 entries).
	cur, _ := leaderOf()
	m, err = cur.Membership(ctx, shard)
	if err != nil {
		t.Fatal(err)
	}
	if err := cur.RemoveReplica(ctx, shard, leaderID, m.ConfigChangeID); err != nil {
		t.Fatal(err)
	}
	if err := cur.RemoveReplica(ctx, shard, leaderID, m.ConfigChangeID); err == nil {
		t.Fatal("a change with a stale ConfigChangeID was accepted")
	}
	if m, err = cur.Membership(ctx, shard); err != nil {
		t.Fatal(err)
	}
	if _, still := m.Voters[leaderID]; still || !m.Removed[leaderID] {
		t.Fatalf("membership after remove: %+v", m)
	}
	addr4 := freeAddr(t)
	if err := cur.AddReplica(ctx, shard, 4, addr4, m.ConfigChangeID); err != nil {
		t.Fatal(err)
	}
	h4 := newTestHost(t, 4, addr4, filepath.Join(dir, "4", "raft"))
	defer h4.Close()
	sms[4] = newCounterSMs(filepath.Join(dir, "4"))
	if err := os.MkdirAll(filepath.Join(dir, "4"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := h4.StartOnDiskShard(shard, nil, true, sms[4].create); err != nil {
		t.Fatal(err)
	}
	hosts[4] = h4
	for v := uint64(31); v <= 35; v++ {
		propose(v)
	}
	// Every surviving replica applies everything.
	converge := func() {
		t.Helper()
		for id := range hosts {
			for {
				s := sms[id].get(shard)
				s.mu.Lock()
				sum := s.sum
				s.mu.Unlock()
				if sum == want {
					break
				}
				if ctx.Err() != nil {
					t.Fatalf("replica %d: sum %d, want %d", id, sum, want)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
	}
	converge()

	// Restart the joined replica the way a broker restarts every shard (members given, join
	// false): dragonboat's record of the join wins.
	h4.Close()
	h4 = newTestHost(t, 4, addr4, filepath.Join(dir, "4", "raft"))
	defer h4.Close()
	if err := h4.StartOnDiskShard(shard, members, false, sms[4].create); err != nil {
		t.Fatal(err)
	}
	hosts[4] = h4
	propose(36)
	converge()
}

// TestProposeAsyncConcurrent: many goroutines propose at once; every callback fires exactly once,
// and stopping the shard with proposals in flight completes them too.
func TestProposeAsyncConcurrent(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	h := newTestHost(t, 1, addr, filepath.Join(dir, "raft"))
	defer h.Close()
	sms := newCounterSMs(dir)
	const shard = FirstPartitionShardID
	if err := h.StartOnDiskShard(shard, map[uint64]string{1: addr}, false, sms.create); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := h.Propose(ctx, shard, nil); err != nil {
		t.Fatal(err)
	}

	// Each worker keeps up to 8 proposals in flight: 64 in all, within dragonboat's proposal
	// queue (proposalQueueLen; past it a proposal fails with ErrBusy).
	const workers, each, window = 8, 200, 8
	var calls [workers * each]atomic.Int32
	var wg sync.WaitGroup
	var okCount atomic.Int64
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var inner sync.WaitGroup
			sem := make(chan struct{}, window)
			for i := 0; i < each; i++ {
				slot := &calls[w*each+i]
				inner.Add(1)
				sem <- struct{}{}
				err := h.ProposeAsync(shard, cmdOf(1), 10*time.Second, func(_ sm.Result, err error) {
					if err == nil {
						okCount.Add(1)
					}
					slot.Add(1)
					<-sem
					inner.Done()
				})
				if err != nil {
					t.Errorf("propose async: %v", err)
					<-sem
					inner.Done()
					slot.Add(1)
				}
			}
			inner.Wait()
		}()
	}
	wg.Wait()
	for i := range calls {
		if n := calls[i].Load(); n != 1 {
			t.Fatalf("callback %d called %d times", i, n)
		}
	}
	if got := sms.get(shard).sum; got != uint64(okCount.Load()) || got != workers*each {
		t.Fatalf("applied sum %d, successful callbacks %d, want %d", got, okCount.Load(), workers*each)
	}

	// Stop with proposals in flight: each callback still fires once (result or ErrShardClosed).
	var inflight sync.WaitGroup
	var stopCalls atomic.Int32
	accepted := 0
	// (100: within the proposal queue, so that the stop comes with proposals in flight.)
	for i := 0; i < 100; i++ {
		inflight.Add(1)
		err := h.ProposeAsync(shard, cmdOf(1), 10*time.Second, func(_ sm.Result, err error) {
			if err != nil && !errors.Is(err, ErrShardClosed) {
				t.Errorf("in-flight proposal at stop: %v", err)
			}
			stopCalls.Add(1)
			inflight.Done()
		})
		if err != nil {
			inflight.Done()
			break
		}
		accepted++
		if i == 50 {
			go h.StopShard(shard)
		}
	}
	inflight.Wait()
	if int(stopCalls.Load()) != accepted {
		t.Fatalf("%d callbacks for %d accepted proposals", stopCalls.Load(), accepted)
	}
}

// TestShardStopStart: a stopped shard can be started again at once on the same Host (dragonboat
// unloads it in the background) and carries on from its state.
func TestShardStopStart(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	sms := newCounterSMs(dir)
	h := newTestHost(t, 1, addr, filepath.Join(dir, "raft"))
	defer h.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const shard = FirstPartitionShardID
	for i := uint64(1); i <= 3; i++ {
		if err := h.StartOnDiskShard(shard, map[uint64]string{1: addr}, false, sms.create); err != nil {
			t.Fatalf("start %d: %v", i, err)
		}
		res, err := h.Propose(ctx, shard, cmdOf(1))
		if err != nil {
			t.Fatal(err)
		}
		if res.Value != i {
			t.Fatalf("start %d: sum %d, want %d", i, res.Value, i)
		}
		if err := h.StopShard(shard); err != nil {
			t.Fatal(err)
		}
	}
}

// Shards snapshot at different intervals, so a topic's partitions do not all snapshot together; the
// interval is a function of the shard alone.
func TestSnapshotIntervalsSpread(t *testing.T) {
	seen := map[uint64]bool{}
	for shard := uint64(1000); shard < 1064; shard++ {
		n := snapshotEntries(1000, shard)
		if n < 1000 || n >= 1500 || n != snapshotEntries(1000, shard) {
			t.Fatalf("shard %d: interval %d", shard, n)
		}
		seen[n/25] = true
	}
	if len(seen) < 12 {
		t.Fatalf("64 consecutive shards fall in %d of 20 bands of the interval range", len(seen))
	}
	if snapshotEntries(10, 5) < 10 || snapshotEntries(1, 5) != 1 {
		t.Fatal("small bases")
	}
}

// A data directory written with another Raft log store (dragonboat's tan, the default before
// 2026-12-07) is refused with ErrOtherLogDB, not read.
func TestDirOfAnotherLogDBIsRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "raft")
	addr := freeAddr(t)
	nhc := config.NodeHostConfig{NodeHostDir: dir, RTTMillisecond: 5, RaftAddress: addr, Expert: config.GetDefaultExpertConfig()}
	nhc.Expert.LogDBFactory = tan.Factory
	nhc.Expert.LogDB = config.GetTinyMemLogDBConfig()
	nh, err := dragonboat.NewNodeHost(nhc)
	if err != nil {
		t.Fatal(err)
	}
	nh.Close()
	if h, err := NewHost(HostConfig{NodeID: 1, RaftAddr: addr, DataDir: dir}); err == nil {
		h.Close()
		t.Fatal("a tan data directory was opened")
	} else if !errors.Is(err, ErrOtherLogDB) {
		t.Fatalf("opening a tan data directory: %v, want ErrOtherLogDB", err)
	}
}

// A partition's snapshot is due after SnapshotEntries and SnapshotInterval both, the interval
// spread per shard; dragonboat's own trigger is SnapshotMaxEntries.
func TestSnapshotDue(t *testing.T) {
	h := &Host{cfg: HostConfig{SnapshotEntries: 1000, SnapshotInterval: 10 * time.Second}}
	h.cfg.setDefaults()
	if h.cfg.SnapshotMaxEntries != 50000 {
		t.Fatalf("SnapshotMaxEntries %d, want 50000", h.cfg.SnapshotMaxEntries)
	}
	for shard := uint64(1000); shard < 1100; shard++ {
		if h.SnapshotDue(shard, 999, time.Hour) {
			t.Fatal("due before SnapshotEntries")
		}
		if h.SnapshotDue(shard, 1500, 10*time.Second-1) {
			t.Fatal("due before SnapshotInterval")
		}
		if !h.SnapshotDue(shard, 1500, 15*time.Second) {
			t.Fatal("not due after 1.5 SnapshotEntries and 1.5 SnapshotInterval")
		}
	}
	entriesOnly := &Host{cfg: HostConfig{SnapshotEntries: 1000, SnapshotInterval: -1}}
	entriesOnly.cfg.setDefaults()
	if !entriesOnly.SnapshotDue(1000, 1500, 0) || entriesOnly.cfg.SnapshotMaxEntries != 1000 {
		t.Fatal("a negative SnapshotInterval should snapshot by entries alone")
	}
}
