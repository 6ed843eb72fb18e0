package replica

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/sluicebroker/sluice/internal/kafkatest"
	"github.com/sluicebroker/sluice/segment"
)

// txnBatch is makeBatch with the transactional attribute set.
func txnBatch(pid int64, epoch int16, seq int32, n int) []byte {
	values := make([][]byte, n)
	for i := range values {
		values[i] = make([]byte, 10)
	}
	return kafkatest.TransactionalBatch(pid, epoch, seq, values...)
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
	// A marker from a deposed coordinator (an older coordinator epoch) is refused and changes nothing.
	if _, err := p.WriteMarker(ctx, 12, 1, 5, true); err != nil {
		t.Fatalf("marker at coordinator epoch 5: %v", err)
	}
	if _, err := p.WriteMarker(ctx, 12, 1, 4, false); !errors.Is(err, kerr.TransactionCoordinatorFenced) {
		t.Fatalf("marker of an older coordinator: %v, want TRANSACTION_COORDINATOR_FENCED", err)
	}
	if ps := p.Producers(); len(ps) != 3 || ps[2].ProducerID != 12 || ps[2].CoordEpoch != 5 || ps[2].TxnFirst != -1 {
		t.Fatalf("producers: %+v", ps)
	}
	produce(t, p, txnBatch(12, 1, 1, 1))
	if got := p.AbortedTxns(nil, 11, 100); len(got) != 1 || got[0].FirstOffset != 11 {
		t.Fatalf("second abort: %v", got)
	}
}

// The transaction crash test: a child process runs transactions (data batches, then a commit or abort
// marker) from several producers until it is killed with SIGKILL; the parent reopens the partition and
// checks that the aborted-transaction index and the last stable offset equal what the log itself says
// (recomputed from its batches), so the checkpoint plus Raft replay rebuilt them exactly.
const (
	txnCrashChildEnv = "REPLICA_TXN_CRASH_CHILD"
	txnCrashTopic    = "txcrash"
)

var txnCrashTopicSpec = testTopic{name: txnCrashTopic, partitions: 1, firstShard: 1200}

func TestTxnCrashChild(t *testing.T) {
	if os.Getenv(txnCrashChildEnv) != "1" {
		t.Skip("only runs as the child of TestTxnCrashRecovery")
	}
	dir, addr := os.Getenv(crashDirEnv), os.Getenv(crashAddrEnv)
	round, _ := strconv.Atoi(os.Getenv(crashRoundEnv))
	n := startNode(t, dir, addr, Config{})
	n.apply(txnCrashTopicSpec)
	p := n.partition(txnCrashTopic, 0)
	progress, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("progress-%d", round)), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			pid := crashPID(round, g)
			ctx := context.Background()
			for seq, i := int32(0), 0; ; i++ {
				for k := 0; k <= i%3; k++ {
					if _, err := p.Produce(ctx, txnBatch(pid, 0, seq, 2)); err != nil {
						t.Errorf("produce: %v", err)
						return
					}
					seq += 2
				}
				if _, err := p.WriteMarker(ctx, pid, 0, 1, i%2 == 1); err != nil {
					t.Errorf("marker: %v", err)
					return
				}
				fmt.Fprintln(progress, pid, i)
			}
		}(g)
	}
	wg.Wait()
}

// controlType reads the type of a control batch's record key (0 abort, 1 commit).
func controlType(t testing.TB, batch []byte) int16 {
	r := kbin.Reader{Src: batch[segment.HeaderSize:]}
	r.Varint() // record length
	r.Int8()
	r.Varlong()
	r.Varint()
	key := r.VarintBytes()
	if !r.Ok() || len(key) < 4 {
		t.Fatalf("bad control record")
	}
	return int16(binary.BigEndian.Uint16(key[2:]))
}

func TestTxnCrashRecovery(t *testing.T) {
	if os.Getenv(txnCrashChildEnv) == "1" || os.Getenv(crashChildEnv) == "1" {
		t.Skip("child")
	}
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dir, addr := t.TempDir(), freeAddr(t)
	for round := 1; round <= 2; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestTxnCrashChild$", "-test.v")
		cmd.Env = append(os.Environ(), txnCrashChildEnv+"=1", crashDirEnv+"="+dir, crashAddrEnv+"="+addr, crashRoundEnv+"="+strconv.Itoa(round))
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		path := filepath.Join(dir, fmt.Sprintf("progress-%d", round))
		for countLines(path) < 400 {
			select {
			case <-exited:
				t.Fatalf("round %d: child exited; output:\n%s", round, out.String())
			case <-time.After(20 * time.Millisecond):
			}
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-exited
	}

	n := startNode(t, dir, addr, Config{})
	defer n.close()
	n.apply(txnCrashTopicSpec)
	p := n.partition(txnCrashTopic, 0)

	// Recompute the index from the log.
	var want []AbortedTxn
	open := map[int64]int64{}
	stable := func(next int64) int64 {
		lso := next
		for _, f := range open {
			lso = min(lso, f)
		}
		return lso
	}
	markers := 0
	for off := int64(0); off < p.HighWatermark(); {
		rr, err := p.Read(off, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		data, err := rr.AppendTo(nil)
		rr.Release()
		if err != nil {
			t.Fatal(err)
		}
		for len(data) > 0 {
			h, err := segment.ParseHeader(data)
			if err != nil || h.Size() > len(data) {
				t.Fatalf("batch at %d: %v", off, err)
			}
			b := data[:h.Size()]
			data = data[h.Size():]
			if h.BaseOffset < off {
				continue
			}
			switch {
			case h.IsControl():
				markers++
				if first, ok := open[h.ProducerID]; ok {
					if controlType(t, b) == 0 {
						want = append(want, AbortedTxn{ProducerID: h.ProducerID, FirstOffset: first, LastOffset: h.BaseOffset, LastStableOffset: stable(h.BaseOffset)})
					}
					delete(open, h.ProducerID)
				}
			case h.IsTransactional():
				if _, ok := open[h.ProducerID]; !ok {
					open[h.ProducerID] = h.BaseOffset
				}
			}
			off = h.NextOffset()
		}
	}
	got := p.AbortedTxns(nil, 0, p.HighWatermark())
	if !slices.Equal(got, want) {
		t.Fatalf("aborted index after crashes: %d entries, log says %d\n got %v\nwant %v", len(got), len(want), got, want)
	}
	if lso := p.LastStableOffset(); lso != stable(p.HighWatermark()) {
		t.Fatalf("last stable offset %d, log says %d (open transactions %v)", lso, stable(p.HighWatermark()), open)
	}
	if len(want) == 0 || len(open) == 0 {
		t.Fatalf("the crash left %d aborted and %d open transactions; the test needs both", len(want), len(open))
	}
	t.Logf("%d markers, %d aborted transactions, %d left open by the kills", markers, len(want), len(open))
}
