package quorum

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sm "github.com/lni/dragonboat/v4/statemachine"
)

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func newTestHost(t testing.TB, id uint64, addr, dir string) *Host {
	t.Helper()
	h, err := NewHost(HostConfig{NodeID: id, RaftAddr: addr, DataDir: dir, SnapshotEntries: 10, CompactionOverhead: 5})
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

func (s *counterSM) PrepareSnapshot() (any, error) { return nil, nil }

func (s *counterSM) SaveSnapshot(_ any, w io.Writer, _ <-chan struct{}) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b [16]byte
	binary.BigEndian.PutUint64(b[0:8], s.sum)
	binary.BigEndian.PutUint64(b[8:16], s.applied)
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
