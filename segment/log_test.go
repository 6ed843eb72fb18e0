package segment

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var smallOpts = Options{SegmentBytes: 16 << 10, IndexIntervalBytes: 512, RetentionBytes: -1}

// fillLog appends n batches of varied sizes (1..8 records, 10..600-byte values).
func fillLog(t testing.TB, l *Log, m *model, rng *rand.Rand, n int, ts int64) {
	for i := range n {
		b := makeBatch(1+rng.IntN(8), 10+rng.IntN(600), ts+int64(i)*10)
		appendBatch(t, l, m, b)
	}
}

func TestAppendReadAcrossSegments(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, smallOpts)
	defer l.Close()
	if l.NextOffset() != 0 || l.StartOffset() != 0 || l.Size() != 0 {
		t.Fatalf("empty log: next %d start %d size %d", l.NextOffset(), l.StartOffset(), l.Size())
	}
	r, err := l.Read(0, 100)
	if err != nil || r.Size != 0 || len(r.Ranges) != 0 {
		t.Fatalf("read of empty log: %v %+v", err, r)
	}
	r.Release()
	var m model
	rng := rand.New(rand.NewPCG(1, 2))
	fillLog(t, l, &m, rng, 200, 1000)
	if l.SegmentCount() < 5 {
		t.Fatalf("expected several segments, got %d", l.SegmentCount())
	}
	checkLog(t, l, &m)
	for _, off := range []int64{-1, m.next() + 1} {
		if _, err := l.Read(off, 100); !errors.Is(err, ErrOffsetOutOfRange) {
			t.Fatalf("Read(%d): %v, want ErrOffsetOutOfRange", off, err)
		}
	}
	// The whole log in one read spans every segment.
	r, err = l.Read(0, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Ranges) != l.SegmentCount() {
		t.Fatalf("%d ranges for %d segments", len(r.Ranges), l.SegmentCount())
	}
	var buf bytes.Buffer
	if n, err := r.WriteTo(&buf); err != nil || n != r.Size {
		t.Fatalf("WriteTo: %d, %v", n, err)
	}
	r.Release()
	if !bytes.Equal(buf.Bytes(), readAll(t, l, 0, 1<<30)) {
		t.Fatal("WriteTo and AppendTo disagree")
	}
	// Sealed segments are cut to their logical size; the active one is preallocated.
	segs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	var total int64
	for _, p := range segs[:len(segs)-1] {
		total += fileLen(t, p)
	}
	if last := fileLen(t, segs[len(segs)-1]); last != smallOpts.SegmentBytes {
		t.Fatalf("active segment file is %d bytes, want preallocated %d", last, smallOpts.SegmentBytes)
	}
	if got := readAll(t, l, 0, 1<<30); int64(len(got))-total <= 0 {
		t.Fatalf("sealed files hold %d of %d bytes", total, len(got))
	}
}

func TestReadMaxBytes(t *testing.T) {
	l := openLog(t, t.TempDir(), smallOpts)
	defer l.Close()
	var m model
	for i := range 20 {
		appendBatch(t, l, &m, makeBatch(2, 300+i, int64(i)))
	}
	for _, mb := range []int{-1, 0, 1, 400, 700, 1300, 5000, 17000} {
		for off := int64(0); off < m.next(); off++ {
			if got, want := readAll(t, l, off, mb), m.expectRead(off, mb); !bytes.Equal(got, want) {
				t.Fatalf("Read(%d, %d): %d bytes, want %d", off, mb, len(got), len(want))
			}
		}
	}
	// One batch larger than the whole segment size still goes in, alone, and reads back.
	big := makeBatch(1, 40<<10, 99)
	base := appendBatch(t, l, &m, big)
	if got := readAll(t, l, base, 1); !bytes.Equal(got, m.batches[len(m.batches)-1]) {
		t.Fatal("oversized batch did not read back")
	}
	appendBatch(t, l, &m, makeBatch(1, 10, 100))
	checkLog(t, l, &m)
}

func TestAppendSetsBaseOffsetInPlace(t *testing.T) {
	l := openLog(t, t.TempDir(), smallOpts)
	defer l.Close()
	b := makeBatch(3, 10, 5)
	PutBaseOffset(b, 999)
	appendBatch(t, l, nil, makeBatch(4, 1, 1))
	base, err := l.Append(b)
	if err != nil || base != 4 {
		t.Fatalf("Append: %d, %v", base, err)
	}
	if h, _ := Validate(b); h.BaseOffset != 4 {
		t.Fatalf("batch base offset %d after Append", h.BaseOffset)
	}
	if l.NextOffset() != 7 {
		t.Fatalf("NextOffset %d", l.NextOffset())
	}
	bad := makeBatch(1, 1, 1)
	if _, err := l.Append(bad[:len(bad)-1]); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Append of a cut batch: %v", err)
	}
}

func TestReopenKeepsEverything(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, smallOpts)
	var m model
	rng := rand.New(rand.NewPCG(3, 4))
	fillLog(t, l, &m, rng, 120, 1)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(makeBatch(1, 1, 1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v", err)
	}
	if _, err := l.Read(0, 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Read after Close: %v", err)
	}
	l = openLog(t, dir, smallOpts)
	checkLog(t, l, &m)
	fillLog(t, l, &m, rng, 30, 5000)
	checkLog(t, l, &m)
	l.Close()
	l = openLog(t, dir, smallOpts)
	defer l.Close()
	checkLog(t, l, &m)
}

func TestCheckpoint(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, smallOpts)
	if cp := l.Checkpoint(); cp.AppliedIndex != 0 || cp.NextOffset != 0 || cp.Extra != nil {
		t.Fatalf("fresh checkpoint %+v", cp)
	}
	appendBatch(t, l, nil, makeBatch(3, 10, 1))
	l.SetCheckpoint(Checkpoint{AppliedIndex: 10, NextOffset: 3, Extra: []byte("first")})
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	appendBatch(t, l, nil, makeBatch(3, 10, 1))
	l.SetCheckpoint(Checkpoint{AppliedIndex: 11, NextOffset: 6, Extra: bytes.Repeat([]byte("x"), 100000)})
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	// Set but never synced: must not show up.
	l.SetCheckpoint(Checkpoint{AppliedIndex: 12, NextOffset: 6})
	l.writeMu.Lock()
	l.hasCp = false // as if the process died before the next Sync
	l.writeMu.Unlock()
	l.Close()

	l = openLog(t, dir, smallOpts)
	if cp := l.Checkpoint(); cp.AppliedIndex != 11 || cp.NextOffset != 6 || len(cp.Extra) != 100000 {
		t.Fatalf("checkpoint after reopen: %d %d %d", cp.AppliedIndex, cp.NextOffset, len(cp.Extra))
	}
	l.SetCheckpoint(Checkpoint{AppliedIndex: 13, NextOffset: 6, Extra: []byte("third")})
	l.Close()

	// Tear the newest slot: the previous checkpoint comes back.
	newest := newestSlot(t, dir)
	p := filepath.Join(dir, ckptNames[newest])
	if err := os.Truncate(p, fileLen(t, p)-3); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(p)
	raw[20] ^= 0xff
	os.WriteFile(p, raw, 0o644)
	l = openLog(t, dir, smallOpts)
	if cp := l.Checkpoint(); cp.AppliedIndex != 11 || len(cp.Extra) != 100000 {
		t.Fatalf("after a torn slot: %d, %d extra bytes", cp.AppliedIndex, len(cp.Extra))
	}
	// The next write goes to the torn slot, keeping the intact one.
	l.SetCheckpoint(Checkpoint{AppliedIndex: 14, NextOffset: 6})
	l.Close()
	l = openLog(t, dir, smallOpts)
	defer l.Close()
	if cp := l.Checkpoint(); cp.AppliedIndex != 14 || cp.Extra != nil {
		t.Fatalf("after rewrite: %+v", cp)
	}
}

func newestSlot(t *testing.T, dir string) int {
	best, bestSeq := -1, uint64(0)
	for i, name := range ckptNames {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		_, seq, err := readSlot(f)
		f.Close()
		if err == nil && (best < 0 || seq > bestSeq) {
			best, bestSeq = i, seq
		}
	}
	if best < 0 {
		t.Fatal("no intact slot")
	}
	return best
}

func TestTruncateTo(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, smallOpts)
	var m model
	rng := rand.New(rand.NewPCG(5, 6))
	fillLog(t, l, &m, rng, 150, 1)
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := l.TruncateTo(m.next() + 1); !errors.Is(err, ErrOffsetOutOfRange) {
		t.Fatalf("beyond the end: %v", err)
	}
	if err := l.TruncateTo(m.next()); err != nil {
		t.Fatalf("to NextOffset: %v", err)
	}
	// Not a boundary: inside a multi-record batch.
	for i, b := range m.batches {
		if h, _ := ParseHeader(b); h.RecordCount > 1 {
			if err := l.TruncateTo(m.bases[i] + 1); !errors.Is(err, ErrNotBatchBoundary) {
				t.Fatalf("inside a batch: %v", err)
			}
			break
		}
	}
	segsBefore := l.SegmentCount()
	for _, keep := range []int{140, 100, 60, 59} {
		if err := l.TruncateTo(m.bases[keep]); err != nil {
			t.Fatalf("TruncateTo(%d): %v", m.bases[keep], err)
		}
		m.batches, m.bases = m.batches[:keep], m.bases[:keep]
		checkLog(t, l, &m)
	}
	if l.SegmentCount() >= segsBefore {
		t.Fatalf("segments %d -> %d", segsBefore, l.SegmentCount())
	}
	// Appends continue at the cut, and a reopen does not bring dropped batches back.
	fillLog(t, l, &m, rng, 3, 9999)
	if err := l.TruncateTo(m.bases[len(m.bases)-2]); err != nil {
		t.Fatal(err)
	}
	m.batches, m.bases = m.batches[:len(m.batches)-2], m.bases[:len(m.bases)-2]
	// Simulate a crash: no Close, reopen the directory as it is.
	l2 := openLog(t, dir, smallOpts)
	checkLog(t, l2, &m)
	l2.Close()
	l.Close()
	l = openLog(t, dir, smallOpts)
	checkLog(t, l, &m)
	// Down to the very start.
	if err := l.TruncateTo(0); err != nil {
		t.Fatal(err)
	}
	checkLog(t, l, &model{})
	fillLog(t, l, &m, rng, 1, 0)
	l.Close()
}

func TestRetention(t *testing.T) {
	dir := t.TempDir()
	opts := smallOpts
	l := openLog(t, dir, opts)
	defer l.Close()
	var m model
	now := time.Now()
	// Old batches first (timestamps an hour ago), then new ones.
	for i := range 60 {
		appendBatch(t, l, &m, makeBatch(2, 900, now.Add(-time.Hour).UnixMilli()+int64(i)))
	}
	firstNew := len(m.batches)
	for i := range 60 {
		appendBatch(t, l, &m, makeBatch(2, 900, now.UnixMilli()+int64(i)))
	}
	// Hold a read of the oldest segment across its deletion.
	held, err := l.Read(0, 100)
	if err != nil {
		t.Fatal(err)
	}
	heldWant := m.expectRead(0, 100)

	if n, err := l.EnforceRetention(now); err != nil || n != 0 {
		t.Fatalf("unlimited retention deleted %d: %v", n, err)
	}
	opts.RetentionAge = 30 * time.Minute
	l.SetOptions(opts)
	n, err := l.EnforceRetention(now)
	if err != nil || n == 0 {
		t.Fatalf("age retention: %d, %v", n, err)
	}
	start := l.StartOffset()
	if start > m.bases[firstNew] {
		t.Fatalf("age retention went too far: start %d, first new batch at %d", start, m.bases[firstNew])
	}
	// Everything before start is gone; every segment left before the one holding new data is old.
	if _, err := l.Read(start-1, 100); !errors.Is(err, ErrOffsetOutOfRange) {
		t.Fatalf("Read below start: %v", err)
	}
	got := make([]byte, 0)
	got, err = held.AppendTo(got)
	if err != nil || !bytes.Equal(got, heldWant) {
		t.Fatalf("held read after deletion: %v, equal %v", err, bytes.Equal(got, heldWant))
	}
	held.Release()
	drop := m.indexOf(start)
	m.batches, m.bases = m.batches[drop:], m.bases[drop:]
	checkLog(t, l, &m)

	// Size: keep at least 20 KiB.
	opts.RetentionAge, opts.RetentionBytes = 0, 20<<10
	l.SetOptions(opts)
	if _, err := l.EnforceRetention(now); err != nil {
		t.Fatal(err)
	}
	if l.Size() < 20<<10 || l.Size() > 20<<10+opts.SegmentBytes {
		t.Fatalf("size %d after size retention to %d", l.Size(), 20<<10)
	}
	drop = m.indexOf(l.StartOffset())
	m.batches, m.bases = m.batches[drop:], m.bases[drop:]
	checkLog(t, l, &m)
	// Zero bytes: all but the active segment goes; offsets carry on.
	opts.RetentionBytes = 0
	l.SetOptions(opts)
	l.EnforceRetention(now)
	if l.SegmentCount() != 1 || l.StartOffset() > m.next() {
		t.Fatalf("%d segments, start %d", l.SegmentCount(), l.StartOffset())
	}
	l.Close()
	l = openLog(t, dir, opts)
	drop = m.indexOf(l.StartOffset())
	if drop >= 0 {
		m.batches, m.bases = m.batches[drop:], m.bases[drop:]
	} else {
		m.batches, m.bases = nil, nil
	}
	if l.NextOffset() != 120*2 {
		t.Fatalf("NextOffset after retention and reopen: %d", l.NextOffset())
	}
}

// Batches without timestamps (-1) age by the segment file's modification time.
func TestRetentionWithoutTimestamps(t *testing.T) {
	opts := smallOpts
	opts.RetentionAge = time.Hour
	l := openLog(t, t.TempDir(), opts)
	defer l.Close()
	for range 40 {
		appendBatch(t, l, nil, makeBatch(1, 900, -1))
	}
	if n, err := l.EnforceRetention(time.Now()); err != nil || n != 0 {
		t.Fatalf("fresh segments without timestamps: %d deleted, %v", n, err)
	}
	n, err := l.EnforceRetention(time.Now().Add(2 * time.Hour))
	if err != nil || n == 0 || l.SegmentCount() != 1 {
		t.Fatalf("two hours later: %d deleted, %v, %d left", n, err, l.SegmentCount())
	}
}

func TestOffsetForTimestamp(t *testing.T) {
	l := openLog(t, t.TempDir(), smallOpts)
	defer l.Close()
	var m model
	rng := rand.New(rand.NewPCG(7, 8))
	// Mostly rising timestamps with some out of order.
	ts := int64(1000)
	for range 150 {
		ts += int64(rng.IntN(20)) - 3
		appendBatch(t, l, &m, makeBatch(1+rng.IntN(3), 50+rng.IntN(400), ts))
	}
	for q := int64(900); q <= ts+30; q += 7 {
		want, wantFound := int64(0), false
		for i, b := range m.batches {
			if h, _ := ParseHeader(b); h.MaxTimestamp >= q {
				want, wantFound = m.bases[i], true
				break
			}
		}
		got, found, err := l.OffsetForTimestamp(q)
		if err != nil || found != wantFound || got != want {
			t.Fatalf("OffsetForTimestamp(%d) = %d, %v, %v; want %d, %v", q, got, found, err, want, wantFound)
		}
	}
}

func TestRollByAgeAndIndexSize(t *testing.T) {
	opts := smallOpts
	opts.SegmentBytes = 1 << 20
	opts.SegmentAge = time.Millisecond
	l := openLog(t, t.TempDir(), opts)
	defer l.Close()
	var m model
	for i := range 4 {
		appendBatch(t, l, &m, makeBatch(1, 10, int64(i)))
		time.Sleep(3 * time.Millisecond)
	}
	if l.SegmentCount() != 4 {
		t.Fatalf("%d segments after 4 appends with a 1ms segment age", l.SegmentCount())
	}
	checkLog(t, l, &m)

	old := maxIndexEntries
	maxIndexEntries = 3
	defer func() { maxIndexEntries = old }()
	opts.SegmentAge = 0
	opts.IndexIntervalBytes = 1
	l.SetOptions(opts)
	before := l.SegmentCount()
	for i := range 12 {
		appendBatch(t, l, &m, makeBatch(1, 10, int64(i)))
	}
	if got := l.SegmentCount() - before; got < 2 {
		t.Fatalf("index of 3 entries rolled %d times in 12 appends", got)
	}
	checkLog(t, l, &m)
}

func TestConcurrentReaders(t *testing.T) {
	l := openLog(t, t.TempDir(), smallOpts)
	defer l.Close()
	l.SetOptions(Options{SegmentBytes: smallOpts.SegmentBytes, IndexIntervalBytes: 512, RetentionBytes: 64 << 10})
	var m model
	batches := make([][]byte, 400)
	for i := range batches {
		batches[i] = makeBatch(1+i%4, 100+i%300, int64(i))
	}
	var wg sync.WaitGroup
	done := make(chan struct{})
	for g := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 9))
			for {
				select {
				case <-done:
					return
				default:
				}
				start, next := l.StartOffset(), l.NextOffset()
				if next == start {
					continue
				}
				off := start + rng.Int64N(next-start)
				r, err := l.Read(off, 1+rng.IntN(8000))
				if errors.Is(err, ErrOffsetOutOfRange) && off < l.StartOffset() {
					continue // retention got there first
				}
				if err != nil {
					t.Errorf("Read(%d): %v", off, err)
					return
				}
				b, err := r.AppendTo(nil)
				r.Release()
				if err != nil {
					t.Errorf("AppendTo: %v", err)
					return
				}
				// Whatever came back is whole, valid batches starting with the one holding off.
				for first := true; len(b) > 0; first = false {
					h, err := ParseHeader(b)
					if err == nil {
						_, err = Validate(b[:h.Size()])
					}
					if err != nil {
						t.Errorf("read from %d: %v", off, err)
						return
					}
					if first && (off < h.BaseOffset || off >= h.NextOffset()) {
						t.Errorf("read from %d starts with batch %d..%d", off, h.BaseOffset, h.LastOffset())
						return
					}
					b = b[h.Size():]
				}
			}
		}()
	}
	for i, b := range batches {
		appendBatch(t, l, &m, b)
		if i%50 == 0 {
			if err := l.Sync(); err != nil {
				t.Error(err)
			}
		}
		if i%20 == 0 {
			if _, err := l.EnforceRetention(time.Now()); err != nil {
				t.Error(err)
			}
		}
	}
	close(done)
	wg.Wait()
	if l.StartOffset() == 0 {
		t.Fatal("retention deleted nothing")
	}
	drop := m.indexOf(l.StartOffset())
	m.batches, m.bases = m.batches[drop:], m.bases[drop:]
	checkLog(t, l, &m)
}

func TestDelete(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "topic-0")
	l := openLog(t, dir, smallOpts)
	appendBatch(t, l, nil, makeBatch(1, 1, 1))
	if err := l.Delete(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("directory still there: %v", err)
	}
}

// A checkpoint whose data did not survive (its fsync ran alongside the data's) gives way to the
// previous one.
func TestCheckpointAheadOfData(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, smallOpts)
	var m model
	appendBatch(t, l, &m, makeBatch(3, 10, 1))
	l.SetCheckpoint(Checkpoint{AppliedIndex: 1, NextOffset: 3, Extra: []byte("one")})
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	appendBatch(t, l, &m, makeBatch(3, 10, 1))
	l.SetCheckpoint(Checkpoint{AppliedIndex: 2, NextOffset: 6, Extra: []byte("two")})
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	crash(l)
	// The second batch is lost, as if its pages never reached the disk.
	if err := os.Truncate(segmentPath(dir, 0), int64(len(m.batches[0])+5)); err != nil {
		t.Fatal(err)
	}
	l = openLog(t, dir, smallOpts)
	if cp := l.Checkpoint(); cp.AppliedIndex != 1 || cp.NextOffset != 3 || string(cp.Extra) != "one" {
		t.Fatalf("checkpoint %+v, want the first", cp)
	}
	// The next checkpoint replaces the unusable one, not the one in force.
	l.SetCheckpoint(Checkpoint{AppliedIndex: 3, NextOffset: 3})
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	crash(l)
	for i := range ckptNames {
		f, _ := os.Open(filepath.Join(dir, ckptNames[i]))
		cp, _, err := readSlot(f)
		f.Close()
		if err != nil || (cp.AppliedIndex != 1 && cp.AppliedIndex != 3) {
			t.Fatalf("slot %d holds %+v, %v", i, cp, err)
		}
	}
	l = openLog(t, dir, smallOpts)
	defer l.Close()
	if cp := l.Checkpoint(); cp.AppliedIndex != 3 {
		t.Fatalf("checkpoint %+v, want index 3", cp)
	}
}

// After Close, or after Sync and a crash with nothing appended since, every index is trusted:
// Open rebuilds nothing. After a crash with unsynced appends, only the active segment is rebuilt.
func TestIndexTrust(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, smallOpts)
	var m model
	rng := rand.New(rand.NewPCG(11, 12))
	fillLog(t, l, &m, rng, 100, 1)
	l.Close()
	rebuilt := func(l *Log) int { return len(l.unsynced) }
	l = openLog(t, dir, smallOpts)
	if n := rebuilt(l); n != 0 {
		t.Fatalf("after Close, %d segments rebuilt", n)
	}
	fillLog(t, l, &m, rng, 60, 1)
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	crash(l)
	l = openLog(t, dir, smallOpts)
	if n := rebuilt(l); n != 0 {
		t.Fatalf("after Sync and crash, %d segments rebuilt", n)
	}
	checkLog(t, l, &m)
	fillLog(t, l, &m, rng, 60, 1)
	crash(l)
	l = openLog(t, dir, smallOpts)
	defer l.Close()
	if n := rebuilt(l); n < 1 || l.unsynced[len(l.unsynced)-1] != l.active {
		t.Fatalf("after unsynced appends and crash, %d segments rebuilt", n)
	}
	checkLog(t, l, &m)
}

// Append must not allocate in steady state (index entries grow a slice: amortized, rare).
func TestAppendDoesNotAllocate(t *testing.T) {
	l := openLog(t, t.TempDir(), Options{SegmentBytes: 64 << 20, RetentionBytes: -1})
	defer l.Close()
	b := batchOfSize(1024)
	for range 100 {
		appendBatch(t, l, nil, b)
	}
	if avg := testing.AllocsPerRun(2000, func() { l.Append(b) }); avg > 0.01 {
		t.Fatalf("%.3f allocations per Append", avg)
	}
}

// Sealed segments keep a thinned index in memory; lookups, truncation into them and reopening
// still work exactly.
func TestThinnedIndex(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentBytes: 16 << 10, IndexIntervalBytes: 64, RetentionBytes: -1}
	l := openLog(t, dir, opts)
	var m model
	rng := rand.New(rand.NewPCG(21, 22))
	ts := int64(1000)
	for range 200 {
		ts += int64(rng.IntN(20)) - 3
		appendBatch(t, l, &m, makeBatch(1+rng.IntN(3), 20+rng.IntN(300), ts))
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	thinned := 0
	for _, s := range l.segs {
		if s.thinned {
			thinned++
		}
	}
	if thinned == 0 || l.active.thinned {
		t.Fatalf("%d of %d segments thinned (active: %v)", thinned, len(l.segs), l.active.thinned)
	}
	checkLog(t, l, &m)
	checkTimestamps(t, l, &m, 900, ts+30)
	// Cut inside the second segment, which is thinned.
	second := l.segs[1]
	if !second.thinned {
		t.Fatal("second segment not thinned")
	}
	keep := m.indexOf(second.base) + 5
	if err := l.TruncateTo(m.bases[keep]); err != nil {
		t.Fatal(err)
	}
	m.keepFirst(keep)
	checkLog(t, l, &m)
	fillLog(t, l, &m, rng, 40, ts)
	checkLog(t, l, &m)
	crash(l)
	l = openLog(t, dir, opts)
	checkLog(t, l, &m)
	l.Close()
	l = openLog(t, dir, opts)
	defer l.Close()
	checkLog(t, l, &m)
	for _, s := range l.segs[:len(l.segs)-1] {
		if len(s.entries) >= 2*sealedIndexStride && !s.thinned {
			t.Fatalf("segment %d reopened with a full index of %d entries", s.base, len(s.entries))
		}
	}
}

func checkTimestamps(t *testing.T, l *Log, m *model, from, to int64) {
	t.Helper()
	for q := from; q <= to; q += 3 {
		want, wantFound := int64(0), false
		for i, b := range m.batches {
			if h, _ := ParseHeader(b); h.MaxTimestamp >= q {
				want, wantFound = m.bases[i], true
				break
			}
		}
		got, found, err := l.OffsetForTimestamp(q)
		if err != nil || found != wantFound || got != want {
			t.Fatalf("OffsetForTimestamp(%d) = %d, %v, %v; want %d, %v", q, got, found, err, want, wantFound)
		}
	}
}

// A read that reaches the end of the active segment's view continues after it, not from the
// segment's start, when appends came in meanwhile.
func TestViewAfterActiveSegment(t *testing.T) {
	l := openLog(t, t.TempDir(), smallOpts)
	defer l.Close()
	var m model
	appendBatch(t, l, &m, makeBatch(2, 50, 1))
	v, ok, err := l.viewAt(0)
	if err != nil || !ok {
		t.Fatalf("viewAt: %v %v", ok, err)
	}
	defer v.s.release()
	if _, _, ok := l.viewAfter(v); ok {
		t.Fatal("viewAfter at the end of the log found something")
	}
	appendBatch(t, l, &m, makeBatch(2, 50, 1))
	next, pos, ok := l.viewAfter(v)
	if !ok || next.s != v.s || pos != v.end {
		t.Fatalf("viewAfter: same segment %v, pos %d (view ended at %d), ok %v", next.s == v.s, pos, v.end, ok)
	}
	next.s.release()
}

// A floor keeps every segment holding an offset at or above it (a log that is also the Raft log
// keeps what Raft may still read), and RetentionTarget says where retention would go without it.
func TestRetentionFloor(t *testing.T) {
	dir := t.TempDir()
	opts := smallOpts
	opts.RetentionAge = 30 * time.Minute
	l := openLog(t, dir, opts)
	defer l.Close()
	var m model
	now := time.Now()
	for i := range 60 {
		appendBatch(t, l, &m, makeBatch(2, 900, now.Add(-time.Hour).UnixMilli()+int64(i)))
	}
	appendBatch(t, l, &m, makeBatch(2, 900, now.UnixMilli()))
	target := l.RetentionTarget(now)
	if target <= m.bases[1] {
		t.Fatalf("retention target %d: nothing due", target)
	}
	floor := m.bases[len(m.bases)/2]
	if _, err := l.EnforceRetentionBelow(now, floor); err != nil {
		t.Fatal(err)
	}
	if start := l.StartOffset(); start > floor || start == 0 {
		t.Fatalf("start %d after retention with floor %d", start, floor)
	}
	if _, err := l.Read(floor, 1); err != nil {
		t.Fatalf("the floor's batch is gone: %v", err)
	}
	if _, err := l.EnforceRetentionBelow(now, math.MaxInt64); err != nil {
		t.Fatal(err)
	}
	if start := l.StartOffset(); start != target {
		t.Fatalf("start %d without a floor, RetentionTarget said %d", start, target)
	}
}

// TestCheckpointHoldsNoDescriptor: a log keeps no file open for its checkpoint slots between
// writes; with thousands of idle partitions per broker two descriptors each counted (issue 14).
func TestCheckpointHoldsNoDescriptor(t *testing.T) {
	if _, err := os.Stat("/proc/self/fd"); err != nil {
		t.Skip("no /proc/self/fd")
	}
	dir := t.TempDir()
	l := openLog(t, dir, smallOpts)
	l.SetCheckpoint(Checkpoint{AppliedIndex: 1, NextOffset: 0})
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	l.SetCheckpoint(Checkpoint{AppliedIndex: 2, NextOffset: 0})
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err == nil && strings.HasPrefix(target, filepath.Join(dir, "checkpoint.")) {
			t.Errorf("descriptor %s open on %s", fd.Name(), target)
		}
	}
	l.Close()
	l = openLog(t, dir, smallOpts)
	defer l.Close()
	if cp := l.Checkpoint(); cp.AppliedIndex != 2 {
		t.Fatalf("checkpoint after reopening: %+v", cp)
	}
}

// openUnder lists the descriptors this process holds on files in dir, by file name.
func openUnder(t *testing.T, dir string) []string {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err == nil && filepath.Dir(target) == dir {
			names = append(names, filepath.Base(target))
		}
	}
	return names
}

// TestIndexFilesHeldOnlyWhileWritten: a log holds descriptors for its segments' data and nothing
// else between operations: the index files and their sum are opened by the Sync that writes them and
// closed again, on a fresh log, after appends and rolls, after TruncateTo and after a reopen. With
// 10,000 partitions per broker, three more descriptors each did not fit (issue 14).
func TestIndexFilesHeldOnlyWhileWritten(t *testing.T) {
	if _, err := os.Stat("/proc/self/fd"); err != nil {
		t.Skip("no /proc/self/fd")
	}
	dir := t.TempDir()
	onlyActive := func(l *Log, when string) {
		t.Helper()
		for _, name := range openUnder(t, dir) {
			if !strings.HasSuffix(name, logSuffix) {
				t.Fatalf("%s: %s open", when, name)
			}
		}
	}
	l := openLog(t, dir, smallOpts)
	onlyActive(l, "fresh log")
	for i := range 40 { // ~40 KiB over 16 KiB segments: rolls, and index points in each
		if _, err := l.Append(makeBatch(1, 1000, int64(i))); err != nil {
			t.Fatal(err)
		}
	}
	if l.SegmentCount() < 3 {
		t.Fatalf("%d segments, want rolls", l.SegmentCount())
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	onlyActive(l, "after appends and Sync")
	if err := l.TruncateTo(5); err != nil {
		t.Fatal(err)
	}
	onlyActive(l, "after TruncateTo")
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openLog(t, dir, smallOpts)
	defer l.Close()
	onlyActive(l, "after reopening")
	if n := l.NextOffset(); n != 5 {
		t.Fatalf("next offset %d after reopening, want 5", n)
	}
	// The index written by those Syncs is trusted at the next Open: no rebuild.
	for _, s := range l.segs {
		if _, err := os.Stat(s.stem() + sumSuffix); err != nil {
			t.Errorf("segment %d: %v", s.base, err)
		}
	}
}
