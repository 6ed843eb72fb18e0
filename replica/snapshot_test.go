package replica

import (
	"bytes"
	"encoding/binary"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	sm "github.com/lni/dragonboat/v4/statemachine"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/sluicebroker/sluice/segment"
)

// openSM opens a state machine directly, without Raft, on a partition in dir.
func openSM(t *testing.T, dir string, opts segment.Options) *stateMachine {
	t.Helper()
	p := newPartition(nil, "t", 0, 1000, dir, TopicConfig{Log: opts, MaxMessageBytes: 1 << 20}, slog.Default())
	s := p.createStateMachine(1000, 1).(*stateMachine)
	if _, err := s.Open(nil); err != nil {
		t.Fatal(err)
	}
	return s
}

// applyBatches applies produce commands at Raft indexes from..from+len-1 and
// returns their results.
func applyBatches(t *testing.T, s *stateMachine, from uint64, batches ...[]byte) []uint64 {
	t.Helper()
	entries := make([]sm.Entry, len(batches))
	for i, b := range batches {
		entries[i] = sm.Entry{Index: from + uint64(i), Cmd: encodeProduce(b, 0, 3, time.Now().UnixMilli())}
	}
	out, err := s.Update(entries)
	if err != nil {
		t.Fatal(err)
	}
	res := make([]uint64, len(out))
	for i := range out {
		res[i] = out[i].Result.Value
	}
	return res
}

// logBytes returns the bytes of the batches in [from, to).
func logBytes(t *testing.T, log *segment.Log, from, to int64) []byte {
	t.Helper()
	var out []byte
	for off := from; off < to; {
		r, err := log.Read(off, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		chunk, err := r.AppendTo(nil)
		r.Release()
		if err != nil {
			t.Fatal(err)
		}
		for len(chunk) > 0 && off < to {
			h, err := segment.ParseHeader(chunk)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, chunk[:h.Size()]...)
			off = h.NextOffset()
			chunk = chunk[h.Size():]
		}
	}
	return out
}

func TestSnapshotRoundTrip(t *testing.T) {
	dir := t.TempDir()
	opts := segment.Options{SegmentBytes: 4096, RetentionBytes: 8192}
	src := openSM(t, filepath.Join(dir, "src"), opts)
	defer src.Close()

	idx := uint64(1)
	for i := 0; i < 60; i++ {
		applyBatches(t, src, idx, makeBatch(int64(1+i%3), 0, int32(i/3), 1, 300))
		idx++
	}
	if n, err := src.log.EnforceRetention(time.Now()); err != nil || n == 0 {
		t.Fatalf("retention: %d segments, %v", n, err)
	}
	start, next := src.log.StartOffset(), src.log.NextOffset()
	if start == 0 {
		t.Fatal("test needs a log start above 0")
	}
	state, err := src.PrepareSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Appends after Prepare must not leak into the snapshot.
	applyBatches(t, src, idx, makeBatch(1, 0, 20, 1, 300))
	idx++
	var snap bytes.Buffer
	if err := src.SaveSnapshot(state, &snap, nil); err != nil {
		t.Fatal(err)
	}

	// The receiver holds unrelated data that the snapshot replaces.
	dst := openSM(t, filepath.Join(dir, "dst"), opts)
	applyBatches(t, dst, 1, makeBatch(-1, -1, 0, 5, 10))
	if err := dst.RecoverFromSnapshot(bytes.NewReader(snap.Bytes()), nil); err != nil {
		t.Fatal(err)
	}
	if dst.log.StartOffset() != start || dst.log.NextOffset() != next || dst.applied != idx-2 {
		t.Fatalf("recovered [%d, %d) applied %d, want [%d, %d) applied %d",
			dst.log.StartOffset(), dst.log.NextOffset(), dst.applied, start, next, idx-2)
	}
	if dst.p.HighWatermark() != next {
		t.Fatalf("high watermark %d, want %d", dst.p.HighWatermark(), next)
	}
	if !bytes.Equal(logBytes(t, dst.log, start, next), logBytes(t, src.log, start, next)) {
		t.Fatal("recovered batches differ from the source's")
	}
	// Same producer state: the entry applied after Prepare gives the same result on both.
	got := applyBatches(t, dst, idx-1, makeBatch(1, 0, 20, 1, 300))[0]
	if want := okResult(next, false); got != want {
		t.Fatalf("entry after the snapshot: result %x, want %x", got, want)
	}
	if dup := applyBatches(t, dst, idx, makeBatch(1, 0, 19, 1, 300))[0]; dup&resultDuplicate == 0 {
		t.Fatalf("producer history lost in the snapshot: result %x", dup)
	}

	// The recovered log survives a restart with its checkpoint.
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	again := openSM(t, filepath.Join(dir, "dst"), opts)
	defer again.Close()
	if again.applied != idx || again.log.NextOffset() != next+1 || again.log.StartOffset() != start {
		t.Fatalf("after reopen: applied %d, [%d, %d)", again.applied, again.log.StartOffset(), again.log.NextOffset())
	}
}

func TestUpdateRejectsBadCommands(t *testing.T) {
	s := openSM(t, t.TempDir(), segment.Options{RetentionBytes: -1})
	defer s.Close()
	good := makeBatch(-1, -1, 0, 1, 10)
	negDelta := append([]byte(nil), good...)
	binary.BigEndian.PutUint32(negDelta[23:], 0xffffffff)
	cases := []struct {
		name string
		cmd  []byte
		want error
	}{
		{"unknown kind", []byte{99, 0, 0}, kerr.InvalidRequest},
		{"truncated batch", encodeProduce(good[:40], 0, 1, 0), kerr.CorruptMessage},
		{"length field disagrees", encodeProduce(good[:len(good)-1], 0, 1, 0), kerr.CorruptMessage},
		{"negative last offset delta", encodeProduce(negDelta, 0, 1, 0), kerr.CorruptMessage},
		{"good", encodeProduce(good, 0, 1, 0), nil},
	}
	entries := make([]sm.Entry, len(cases))
	for i, c := range cases {
		entries[i] = sm.Entry{Index: uint64(i + 1), Cmd: c.cmd}
	}
	out, err := s.Update(entries)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range cases {
		if _, _, err := decodeResult(out[i].Result.Value); err != c.want {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	if s.applied != uint64(len(cases)) || s.p.HighWatermark() != 1 {
		t.Fatalf("applied %d, high watermark %d", s.applied, s.p.HighWatermark())
	}
}

// TestOpenAfterRetentionPassedCheckpoint: retention deleted segments beyond the
// last checkpoint, then the process died. Open must still resume at the
// checkpoint, and the replay must assign the same offsets.
func TestOpenAfterRetentionPassedCheckpoint(t *testing.T) {
	dir := t.TempDir()
	opts := segment.Options{SegmentBytes: 4096, RetentionBytes: 4096}
	s := openSM(t, dir, opts)
	batches := make([][]byte, 40)
	for i := range batches {
		batches[i] = makeBatch(5, 0, int32(i), 1, 300)
	}
	applyBatches(t, s, 1, batches[:5]...)
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	first := applyBatches(t, s, 6, batches[5:]...)
	if n, err := s.log.EnforceRetention(time.Now()); err != nil || s.log.StartOffset() <= 5 {
		t.Fatalf("retention: %d segments, start %d, %v", n, s.log.StartOffset(), err)
	}
	s.log.Close() // a crash: the checkpoint on disk still says index 5, offset 5

	s = openSM(t, dir, opts)
	defer s.Close()
	if s.applied != 5 || s.log.StartOffset() != 5 || s.log.NextOffset() != 5 {
		t.Fatalf("reopened at applied %d, [%d, %d)", s.applied, s.log.StartOffset(), s.log.NextOffset())
	}
	// Until the replay is done, fetching what consumers may have seen before
	// the crash is retriable, not out of range.
	if _, err := s.p.Read(20, 1024); err != kerr.NotLeaderForPartition {
		t.Fatalf("read during replay: %v", err)
	}
	// Raft re-delivers entries 6..40: same results, and the producer state
	// from the checkpoint accepts them in sequence.
	for i, v := range applyBatches(t, s, 6, batches[5:]...) {
		if v != first[i] {
			t.Fatalf("replayed entry %d: result %x, first time %x", 6+i, v, first[i])
		}
	}
	if _, err := s.p.Read(41, 1024); err != kerr.OffsetOutOfRange {
		t.Fatalf("read past the end after replay: %v", err)
	}
	r, err := s.p.Read(40, 1024)
	if err != nil || len(r.Ranges) != 0 {
		t.Fatalf("read at the end: %v %v", r, err)
	}
	r.Release()
}
