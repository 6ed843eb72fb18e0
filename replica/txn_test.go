package replica

import (
	"context"
	"encoding/binary"
	"hash/crc32"
	"slices"
	"testing"
	"time"
)

// txnBatch is makeBatch with the transactional attribute set.
func txnBatch(pid int64, epoch int16, seq int32, n int) []byte {
	b := makeBatch(pid, epoch, seq, n, 10)
	binary.BigEndian.PutUint16(b[21:], binary.BigEndian.Uint16(b[21:])|0x10)
	binary.BigEndian.PutUint32(b[17:], crc32.Checksum(b[21:], crc32.MakeTable(crc32.Castagnoli)))
	return b
}

func marker(t testing.TB, p *Partition, pid int64, epoch int16, commit bool) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	off, err := p.WriteMarker(ctx, pid, epoch, 1, commit)
	if err != nil {
		t.Fatalf("marker: %v", err)
	}
	return off
}

// TestTransactionsLSOAndAbortedIndex: the last stable offset stops at the
// oldest open transaction; markers move it; aborts enter the index; the
// state survives a restart; a fenced epoch cannot write after the marker.
func TestTransactionsLSOAndAbortedIndex(t *testing.T) {
	dir, addr := t.TempDir(), freeAddr(t)
	n := startNode(t, dir, addr, Config{})
	topic := testTopic{name: "tx", partitions: 1, firstShard: 300}
	n.apply(topic)
	p := n.partition("tx", 0)

	produce(t, p, makeBatch(-1, -1, -1, 2, 10))          // 0-1 plain
	a := produce(t, p, txnBatch(10, 0, 0, 3)).BaseOffset // 2-4 producer 10
	produce(t, p, makeBatch(-1, -1, -1, 1, 10))          // 5 plain
	b := produce(t, p, txnBatch(11, 0, 0, 2)).BaseOffset // 6-7 producer 11
	produce(t, p, txnBatch(10, 0, 3, 1))                 // 8 producer 10 again
	if a != 2 || b != 6 {
		t.Fatalf("offsets %d %d", a, b)
	}
	if got := p.LastStableOffset(); got != 2 {
		t.Fatalf("LSO %d with producer 10 open from 2, want 2", got)
	}
	if p.HighWatermark() != 9 {
		t.Fatalf("hw %d", p.HighWatermark())
	}
	// read_committed stops below the LSO.
	rr, err := p.ReadCommitted(0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if rr.Size != int64(len(makeBatch(-1, -1, -1, 2, 10))) {
		t.Fatalf("read_committed returned %d bytes, want only the first batch", rr.Size)
	}
	rr.Release()

	abortAt := marker(t, p, 10, 0, false) // 9
	if got := p.LastStableOffset(); got != 6 {
		t.Fatalf("LSO %d after aborting producer 10, want 6 (producer 11 open)", got)
	}
	marker(t, p, 11, 0, true) // 10
	if got, hw := p.LastStableOffset(), p.HighWatermark(); got != hw || hw != 11 {
		t.Fatalf("LSO %d hw %d after both ended", got, hw)
	}
	want := []AbortedTxn{{ProducerID: 10, FirstOffset: 2, LastOffset: abortAt, LastStableOffset: 2}}
	if got := p.AbortedTxns(nil, 0, 11); !slices.Equal(got, want) {
		t.Fatalf("aborted %v, want %v", got, want)
	}
	if got := p.AbortedTxns(nil, 10, 11); len(got) != 0 {
		t.Fatalf("aborted past the marker: %v", got)
	}
	if got := p.AbortedTxns(nil, 0, 2); len(got) != 0 {
		t.Fatalf("aborted before the first offset: %v", got)
	}

	// A new open transaction, then a restart: both the index and the open
	// transaction come back.
	produce(t, p, txnBatch(12, 0, 0, 1)) // 11
	n.close()
	n = startNode(t, dir, addr, Config{})
	defer n.close()
	n.apply(topic)
	p = n.partition("tx", 0)
	if got := p.AbortedTxns(nil, 0, 100); !slices.Equal(got, want) {
		t.Fatalf("aborted after restart %v, want %v", got, want)
	}
	if got := p.LastStableOffset(); got != 11 {
		t.Fatalf("LSO after restart %d, want 11", got)
	}
	// Fencing: after a marker at epoch 1, epoch 0 is refused.
	marker(t, p, 12, 1, false)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := p.Produce(ctx, txnBatch(12, 0, 1, 1)); err == nil {
		t.Fatal("a fenced epoch wrote after the marker")
	}
	// The new epoch starts at sequence 0.
	produce(t, p, txnBatch(12, 1, 0, 1))
	if got := p.AbortedTxns(nil, 11, 100); len(got) != 1 || got[0].FirstOffset != 11 {
		t.Fatalf("second abort: %v", got)
	}
}
