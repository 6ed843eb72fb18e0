package segment

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"testing"
)

// crash abandons l as a killed process would: files closed, nothing synced or cut.
func crash(l *Log) { l.closeFiles() }

// placed is a model batch's home: its segment's base offset and its position in the file.
type placed struct {
	seg  int64
	pos  int64
	size int64
}

// layout maps every model batch to its segment file, from the segment files present.
func layout(t *testing.T, dir string, m *model) ([]int64, []placed) {
	t.Helper()
	names, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	var bases []int64
	for _, n := range names {
		b, ok := parseSegmentName(filepath.Base(n))
		if !ok {
			t.Fatalf("odd segment name %s", n)
		}
		bases = append(bases, b)
	}
	sort.Slice(bases, func(i, j int) bool { return bases[i] < bases[j] })
	out := make([]placed, len(m.batches))
	var cur int64 = -1
	var pos int64
	for i, b := range m.batches {
		k := sort.Search(len(bases), func(k int) bool { return bases[k] > m.bases[i] }) - 1
		if bases[k] != cur {
			cur, pos = bases[k], 0
		}
		out[i] = placed{seg: cur, pos: pos, size: int64(len(b))}
		pos += int64(len(b))
	}
	return bases, out
}

// survivors is the model after cutting segment seg at byte cut: its batches that end by cut
// stay, and when any of them is lost, every later segment goes too (offsets stay dense).
func survivors(m *model, where []placed, seg, cut int64) *model {
	out := &model{}
	for i, p := range where {
		if p.seg > seg || (p.seg == seg && p.pos+p.size > cut) {
			break
		}
		out.batches = append(out.batches, m.batches[i])
		out.bases = append(out.bases, m.bases[i])
	}
	return out
}

func TestCrashRecovery(t *testing.T) {
	opts := Options{SegmentBytes: 6 << 10, IndexIntervalBytes: 700, RetentionBytes: -1}
	for trial := range trials(64, 16) {
		t.Run(fmt.Sprint(trial), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(trial), 77))
			dir := t.TempDir()
			l := openLog(t, dir, opts)
			var m model
			fillLog(t, l, &m, rng, 10+rng.IntN(60), 1000)
			if rng.IntN(2) == 0 {
				if err := l.Sync(); err != nil {
					t.Fatal(err)
				}
			}
			crash(l)
			bases, where := layout(t, dir, &m)
			want := &m
			kind := rng.IntN(6)
			switch kind {
			case 0, 1: // cut a segment file at a random byte, maybe followed by zeros or garbage
				seg := bases[rng.IntN(len(bases))]
				p := segmentPath(dir, seg)
				var logical int64
				for _, w := range where {
					if w.seg == seg {
						logical = w.pos + w.size
					}
				}
				cut := rng.Int64N(logical + 1)
				if err := os.Truncate(p, cut); err != nil {
					t.Fatal(err)
				}
				if kind == 1 {
					writeJunk(t, rng, p, cut, 1+rng.IntN(3000))
				}
				want = survivors(&m, where, seg, cut)
			case 2: // garbage after the logical end of the active segment
				last := bases[len(bases)-1]
				var end int64
				for _, w := range where {
					if w.seg == last {
						end = w.pos + w.size
					}
				}
				writeJunk(t, rng, segmentPath(dir, last), end, 1+rng.IntN(3000))
			case 3: // indexes deleted
				for _, b := range bases {
					if rng.IntN(2) == 0 {
						os.Remove(filepath.Join(dir, fmt.Sprintf("%020d%s", b, indexSuffix)))
					}
					if rng.IntN(2) == 0 {
						os.Remove(filepath.Join(dir, fmt.Sprintf("%020d%s", b, timeIndexSuffix)))
					}
				}
			case 4: // indexes corrupted: random bytes overwritten, cut, or grown
				for _, b := range bases {
					for _, suffix := range []string{indexSuffix, timeIndexSuffix} {
						p := filepath.Join(dir, fmt.Sprintf("%020d%s", b, suffix))
						corruptFile(t, rng, p)
					}
				}
			case 5: // stray files: orphan indexes, a temp file
				os.WriteFile(filepath.Join(dir, fmt.Sprintf("%020d%s", m.next()+100, indexSuffix)), []byte("junk"), 0o644)
				os.WriteFile(filepath.Join(dir, "leftover.tmp"), []byte("junk"), 0o644)
			}

			l = openLog(t, dir, opts)
			checkLog(t, l, want)
			checkTimeIndex(t, l, want)
			// The log takes appends again and comes back the same once more.
			fillLog(t, l, want, rng, 5, 5000)
			checkLog(t, l, want)
			crash(l)
			l = openLog(t, dir, opts)
			defer l.Close()
			checkLog(t, l, want)
			if kind == 5 {
				if _, err := os.Stat(filepath.Join(dir, fmt.Sprintf("%020d%s", m.next()+100, indexSuffix))); err == nil {
					t.Fatal("orphan index not removed")
				}
			}
		})
	}
}

// writeJunk writes n bytes at pos: zeros, random bytes, or a stale copy of an earlier batch.
func writeJunk(t *testing.T, rng *rand.Rand, path string, pos int64, n int) {
	t.Helper()
	junk := make([]byte, n)
	switch rng.IntN(3) {
	case 0:
	case 1:
		for i := range junk {
			junk[i] = byte(rng.Uint32())
		}
	case 2:
		// A well-formed batch with the wrong base offset: must not be taken.
		b := makeBatch(1+rng.IntN(3), 20, 1)
		PutBaseOffset(b, 1<<40)
		junk = append(b, junk...)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(junk, pos); err != nil {
		t.Fatal(err)
	}
}

func corruptFile(t *testing.T, rng *rand.Rand, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	switch rng.IntN(4) {
	case 0:
		for range 1 + rng.IntN(8) {
			if len(b) > 0 {
				b[rng.IntN(len(b))] = byte(rng.Uint32())
			}
		}
	case 1:
		b = b[:rng.IntN(len(b)+1)]
	case 2:
		for range rng.IntN(40) {
			b = append(b, byte(rng.Uint32()))
		}
	case 3:
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// checkTimeIndex compares OffsetForTimestamp with a scan of the model.
func checkTimeIndex(t *testing.T, l *Log, m *model) {
	t.Helper()
	for q := int64(990); q < 1000+10*80; q += 13 {
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
