package segment

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicebroker/sluice/batch"
)

// rec is one record as a consumer sees it.
type rec struct {
	offset    int64
	key       string
	tombstone bool
}

// keyedBatch is a batch of keyed records (value "" with tomb set is a tombstone) with codec.
func keyedBatch(t testing.TB, recs []batch.Record, codec int8, attrs uint16, p batch.Producer) []byte {
	t.Helper()
	b := batch.Encode(recs, time.Now().UnixMilli(), attrs, p)
	if codec != batch.CodecNone {
		var scratch []byte
		var err error
		if b, err = batch.Recompress(nil, b, codec, &scratch); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// readRecords reads the whole log from its start: every record with its offset, checking that
// batches and offsets only go up.
func readRecords(t testing.TB, l *Log) []rec {
	t.Helper()
	var out []rec
	prev := int64(-1)
	for off := l.StartOffset(); off < l.NextOffset(); {
		r, err := l.Read(off, 1<<20)
		if err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
		buf, err := r.AppendTo(nil)
		r.Release()
		if err != nil {
			t.Fatal(err)
		}
		if len(buf) == 0 {
			break // the rest is a gap the cleaner left
		}
		for len(buf) > 0 {
			h, err := ParseHeader(buf)
			if err != nil {
				t.Fatal(err)
			}
			b := buf[:h.Size()]
			buf = buf[h.Size():]
			if h.BaseOffset <= prev {
				t.Fatalf("batch at %d after offset %d", h.BaseOffset, prev)
			}
			if got := batch.Checksum(b); got != h.CRC {
				t.Fatalf("batch at %d: bad CRC", h.BaseOffset)
			}
			prev = h.NextOffset() - 1
			off = h.NextOffset()
			if h.IsControl() {
				continue
			}
			recs := b[HeaderSize:]
			if codec := int8(h.Attributes & batch.AttrCompression); codec != batch.CodecNone {
				if recs, err = batch.Decompress(nil, codec, recs); err != nil {
					t.Fatal(err)
				}
			}
			last := int64(-1)
			if err := walkRecords(recs, int(h.RecordCount), func(_ []byte, delta int64, key []byte, null bool) {
				if delta <= last || delta > int64(h.LastOffsetDelta) {
					t.Fatalf("batch at %d: offset delta %d after %d", h.BaseOffset, delta, last)
				}
				last = delta
				out = append(out, rec{offset: h.BaseOffset + delta, key: string(key), tombstone: null})
			}); err != nil {
				t.Fatal(err)
			}
		}
	}
	return out
}

// fillKeyed appends rounds of keyed records (keys k0..k<keys-1>) with tombstones, and returns the
// offset of the latest record of each key and which keys' latest is a tombstone.
func fillKeyed(t testing.TB, l *Log, rng *rand.Rand, batches, keys int) (map[string]int64, map[string]bool) {
	t.Helper()
	latest, dead := map[string]int64{}, map[string]bool{}
	codecs := []int8{batch.CodecNone, batch.CodecZstd, batch.CodecLZ4, batch.CodecGzip, batch.CodecSnappy}
	for range batches {
		n := 1 + rng.IntN(8)
		recs := make([]batch.Record, n)
		for i := range recs {
			k := fmt.Sprintf("k%d", rng.IntN(keys))
			recs[i].Key = []byte(k)
			if rng.IntN(6) > 0 {
				recs[i].Value = []byte(fmt.Sprintf("%s-%d", k, rng.Int()))
			}
		}
		b := keyedBatch(t, recs, codecs[rng.IntN(len(codecs))], 0, batch.NoProducer)
		base, err := l.Append(b)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range recs {
			latest[string(r.Key)] = base + int64(i)
			dead[string(r.Key)] = r.Value == nil
		}
	}
	return latest, dead
}

// checkCompacted checks that every record at or above end is there, and below it exactly the last
// record of each key below end (a tombstone too, unless below tombstonesGoneBelow).
func checkCompacted(t *testing.T, got []rec, before []rec, end int64, tombstonesGoneBelow int64) {
	t.Helper()
	last := map[string]rec{}
	want := map[int64]bool{}
	for _, r := range before {
		if r.offset >= end {
			want[r.offset] = true
		} else {
			last[r.key] = r
		}
	}
	for _, r := range last {
		if !(r.tombstone && r.offset < tombstonesGoneBelow) {
			want[r.offset] = true
		}
	}
	seen := map[int64]bool{}
	for _, r := range got {
		if !want[r.offset] {
			t.Fatalf("record at %d (key %s) kept, should be gone (end %d)", r.offset, r.key, end)
		}
		seen[r.offset] = true
	}
	for o := range want {
		if !seen[o] {
			t.Fatalf("record at %d lost", o)
		}
	}
}

func TestCleanKeepsLatestPerKey(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	dir := t.TempDir()
	opts := Options{SegmentBytes: 4 << 10, IndexIntervalBytes: 300, RetentionBytes: -1}
	l := openLog(t, dir, opts)
	latest, _ := fillKeyed(t, l, rng, 300, 40)
	before := readRecords(t, l)
	if l.SegmentCount() < 5 {
		t.Fatalf("only %d segments", l.SegmentCount())
	}
	end := l.NextOffset()
	now := time.Now()
	st, err := l.Clean(CleanOptions{End: end, Now: now, DeleteRetention: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	l.mu.RLock()
	activeBase := l.active.base
	l.mu.RUnlock()
	if st.Segments == 0 || st.FirstDirty != activeBase {
		t.Fatalf("cleaned %d segments, checkpoint %d (active segment at %d)", st.Segments, st.FirstDirty, activeBase)
	}
	got := readRecords(t, l)
	checkCompacted(t, got, before, activeBase, 0)
	if l.Dirty(CleanOptions{End: end, Now: now}).DirtyBytes != 0 {
		t.Fatal("dirty bytes left after cleaning")
	}

	// A fetch at any removed offset (inside a segment, or in a gap at its end) continues at the next record.
	for _, r := range before {
		if r.offset < activeBase && latest[r.key] != r.offset {
			rr, err := l.Read(r.offset, 1)
			if err != nil {
				t.Fatalf("read at removed offset %d: %v", r.offset, err)
			}
			if rr.NextOffset <= r.offset {
				t.Fatalf("read at removed offset %d ends at %d", r.offset, rr.NextOffset)
			}
			rr.Release()
		}
	}
	if o, found, err := l.OffsetForTimestamp(0); err != nil || !found || o < l.StartOffset() {
		t.Fatalf("OffsetForTimestamp(0) = %d %v %v", o, found, err)
	}

	// The same after a restart (gaps accepted by recovery, indexes rebuilt) and after a crash.
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openLog(t, dir, opts)
	checkCompacted(t, readRecords(t, l), before, activeBase, 0)
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	crash(l)
	l = openLog(t, dir, opts)
	checkCompacted(t, readRecords(t, l), before, activeBase, 0)

	// More writes, then a cleaning past delete.retention.ms: tombstones go.
	fillKeyed(t, l, rng, 100, 40)
	before = readRecords(t, l)
	if _, err := l.Clean(CleanOptions{End: l.NextOffset(), Now: now.Add(2 * time.Hour), DeleteRetention: time.Hour}); err != nil {
		t.Fatal(err)
	}
	l.mu.RLock()
	activeBase2 := l.active.base
	l.mu.RUnlock()
	got = readRecords(t, l)
	// Tombstones in segments cleaned an hour before are gone; those first cleaned now stay.
	checkCompacted(t, got, before, activeBase2, activeBase)
	l.Close()
}

// TestCleanCrashAtEverySwapStep stops the cleaning at each step of each segment's swap (as kill -9
// would) and checks that the log opens whole: every latest record there, nothing twice, every batch
// readable, no leftover file.
func TestCleanCrashAtEverySwapStep(t *testing.T) {
	opts := Options{SegmentBytes: 4 << 10, IndexIntervalBytes: 300, RetentionBytes: -1}
	for stop := range 12 {
		for step := range 4 {
			t.Run(fmt.Sprintf("segment%d-step%d", stop, step), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(uint64(stop), 9))
				dir := t.TempDir()
				l := openLog(t, dir, opts)
				latest, _ := fillKeyed(t, l, rng, 150, 20)
				before := readRecords(t, l)
				if err := l.Sync(); err != nil {
					t.Fatal(err)
				}
				l.mu.RLock()
				activeBase := l.active.base
				l.mu.RUnlock()
				swaps := 0
				o := CleanOptions{End: l.NextOffset(), Now: time.Now(), DeleteRetention: time.Hour}
				o.cleanedHook = func(int) bool {
					if swaps == stop && step == 0 {
						return false
					}
					return true
				}
				swapHook = func(s int) bool {
					if swaps == stop && s == step {
						return false
					}
					if s == 3 {
						swaps++
					}
					return true
				}
				defer func() { swapHook = nil }()
				_, err := l.Clean(o)
				swapHook = nil
				crashed := err != nil
				if crashed && !errors.Is(err, errCleanStopped) {
					t.Fatal(err)
				}
				crash(l)
				l = openLog(t, dir, opts)
				defer l.Close()
				got := readRecords(t, l)
				// Every latest record is there; any other record is one of the originals, once.
				orig := map[int64]rec{}
				for _, r := range before {
					orig[r.offset] = r
				}
				seen := map[int64]bool{}
				for _, r := range got {
					if o, ok := orig[r.offset]; !ok || o.key != r.key || seen[r.offset] {
						t.Fatalf("record at %d: not an original, or twice", r.offset)
					}
					seen[r.offset] = true
				}
				for k, o := range latest {
					if !seen[o] {
						t.Fatalf("latest record of %s (offset %d) lost", k, o)
					}
				}
				names, _ := os.ReadDir(dir)
				for _, de := range names {
					if strings.HasSuffix(de.Name(), cleanedSuffix) {
						t.Fatalf("leftover %s", de.Name())
					}
				}
				// A cleaning after the crash finishes the job.
				if _, err := l.Clean(CleanOptions{End: l.NextOffset(), Now: time.Now(), DeleteRetention: time.Hour}); err != nil {
					t.Fatal(err)
				}
				checkCompacted(t, readRecords(t, l), before, activeBase, 0)
				if _, err := os.Stat(filepath.Join(dir, cleanerCheckpointName)); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

func TestCleanTransactions(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentBytes: 2 << 10, IndexIntervalBytes: 300, RetentionBytes: -1}
	l := openLog(t, dir, opts)
	committed := batch.Producer{ID: 7, Epoch: 0, BaseSequence: 0}
	abortedP := batch.Producer{ID: 8, Epoch: 0, BaseSequence: 0}
	marker := func(p batch.Producer, commit bool) []byte {
		return batch.Marker(p.ID, p.Epoch, 0, commit, time.Now().UnixMilli())
	}
	app := func(b []byte) int64 {
		o, err := l.Append(b)
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	c1 := app(keyedBatch(t, []batch.Record{{Key: []byte("a"), Value: []byte("a1")}}, batch.CodecNone, batch.AttrTransactional, committed))
	a1 := app(keyedBatch(t, []batch.Record{{Key: []byte("b"), Value: []byte("b-aborted")}}, batch.CodecNone, batch.AttrTransactional, abortedP))
	app(marker(committed, true))
	abortAt := app(marker(abortedP, false))
	// Fill so the above is sealed, with other keys.
	rng := rand.New(rand.NewPCG(3, 3))
	fillKeyed(t, l, rng, 80, 10)
	now := time.Now()
	o := CleanOptions{End: l.NextOffset(), Now: now, DeleteRetention: time.Hour,
		Aborted: []AbortedRange{{ProducerID: abortedP.ID, First: a1, Last: abortAt}}}
	if _, err := l.Clean(o); err != nil {
		t.Fatal(err)
	}
	offsets := map[int64]bool{}
	for _, r := range readRecords(t, l) {
		offsets[r.offset] = true
	}
	if !offsets[c1] || offsets[a1] {
		t.Fatalf("committed record kept %v (want true), aborted kept %v (want false)", offsets[c1], offsets[a1])
	}
	controls := func() int {
		n := 0
		r, err := l.Read(l.StartOffset(), 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		buf, _ := r.AppendTo(nil)
		r.Release()
		for len(buf) > 0 {
			h, _ := ParseHeader(buf)
			if h.IsControl() && h.BaseOffset <= abortAt {
				n++
			}
			buf = buf[h.Size():]
		}
		return n
	}
	if n := controls(); n != 2 {
		t.Fatalf("%d markers before delete.retention.ms, want 2", n)
	}
	// Past delete.retention.ms: the abort marker's transaction has no record left, so it goes;
	// the commit marker's still has "a".
	fillKeyed(t, l, rng, 40, 10)
	o.End, o.Now = l.NextOffset(), now.Add(2*time.Hour)
	if _, err := l.Clean(o); err != nil {
		t.Fatal(err)
	}
	if n := controls(); n != 1 {
		t.Fatalf("%d markers after delete.retention.ms, want 1 (the commit)", n)
	}
	l.Close()
}

// BenchmarkClean: cleaner throughput (MB/s of log cleaned) and CPU per MB. A log of 2,000 batches of
// 50 records of 200 bytes over 10,000 random keys (half the batches lz4), 1 MiB segments, cleaned
// once from scratch (every segment dirty) per iteration.
func BenchmarkClean(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	recs := make([]batch.Record, 50)
	value := make([]byte, 200)
	var size, cleaned int64
	var cpu time.Duration
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		dir := b.TempDir()
		l, err := Open(dir, Options{SegmentBytes: 1 << 20, RetentionBytes: -1})
		if err != nil {
			b.Fatal(err)
		}
		for range 2000 {
			for j := range recs {
				recs[j] = batch.Record{Key: binary.BigEndian.AppendUint32(nil, uint32(rng.IntN(10000))), Value: value}
			}
			bt := batch.Encode(recs, 1, 0, batch.NoProducer)
			if i%2 == 1 {
				var scratch []byte
				bt, _ = batch.Recompress(nil, bt, batch.CodecLZ4, &scratch)
			}
			if _, err := l.Append(bt); err != nil {
				b.Fatal(err)
			}
		}
		size = l.Size()
		cpu0 := cpuTime()
		b.StartTimer()
		if _, err := l.Clean(CleanOptions{End: l.NextOffset(), Now: time.Now()}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		cpu += cpuTime() - cpu0
		cleaned += size
		l.Close()
		b.StartTimer()
	}
	b.SetBytes(size)
	// The process's CPU (user + system, all threads: the cleaner's own goroutine plus the kernel's
	// work on its reads, writes and fsyncs) per MB of log cleaned.
	b.ReportMetric(float64(cpu.Milliseconds())/(float64(cleaned)/1e6), "cpu-ms/MB")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestCleanWhileAppendingAndReading runs cleanings while another goroutine appends, reads from the
// start and enforces retention (go test -race finds what the locks miss); every read stays whole.
func TestCleanWhileAppendingAndReading(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	l := openLog(t, t.TempDir(), Options{SegmentBytes: 4 << 10, IndexIntervalBytes: 300, RetentionBytes: -1})
	defer l.Close()
	fillKeyed(t, l, rng, 100, 30)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r := rand.New(rand.NewPCG(6, 6))
		for range 200 {
			fillKeyed(t, l, r, 1, 30)
			readRecords(t, l)
			if err := l.Sync(); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for {
		if _, err := l.Clean(CleanOptions{End: l.NextOffset(), Now: time.Now(), DeleteRetention: time.Hour}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-done:
			return
		default:
		}
	}
}
