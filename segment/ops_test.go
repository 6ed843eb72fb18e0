package segment

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestRandomOps drives a log through random sequences of appends, reads, syncs with checkpoints,
// truncations, retention passes, option changes, clean reopens and crashes (a killed process: the
// page cache keeps every write, so nothing may be lost), checking it against a model throughout.
func TestRandomOps(t *testing.T) {
	for seed := range trials(12, 3) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(seed), 1234))
			dir := t.TempDir()
			opts := Options{SegmentBytes: int64(2048 + rng.IntN(8192)), IndexIntervalBytes: 1 + rng.IntN(1500), RetentionBytes: -1}
			l := openLog(t, dir, opts)
			defer func() { crash(l) }()
			var m model
			var lastCp Checkpoint
			now := time.Now()
			// durable is what a power loss cannot take: segment base -> bytes made durable.
			durable := map[int64]int64{}
			markDurable := func() {
				l.mu.RLock()
				clear(durable)
				for _, s := range l.segs {
					durable[s.base] = s.end
				}
				l.mu.RUnlock()
			}
			for op := range 400 {
				switch k := rng.IntN(100); {
				case k < 55:
					appendBatch(t, l, &m, makeBatch(1+rng.IntN(5), rng.IntN(700), now.UnixMilli()+int64(op)))
				case k < 75:
					if len(m.batches) == 0 {
						continue
					}
					i := rng.IntN(len(m.batches))
					off := m.bases[i]
					if h, _ := ParseHeader(m.batches[i]); h.RecordCount > 1 {
						off += int64(rng.IntN(int(h.RecordCount)))
					}
					mb := rng.IntN(6000)
					if got, want := readAll(t, l, off, mb), m.expectRead(off, mb); !bytes.Equal(got, want) {
						t.Fatalf("op %d: Read(%d, %d): %d bytes, want %d", op, off, mb, len(got), len(want))
					}
				case k < 82:
					lastCp = Checkpoint{AppliedIndex: uint64(op), NextOffset: l.NextOffset(), Extra: []byte(fmt.Sprint(op))}
					l.SetCheckpoint(lastCp)
					if err := l.Sync(); err != nil {
						t.Fatal(err)
					}
					markDurable()
				case k < 87:
					if len(m.batches) == 0 {
						continue
					}
					keep := len(m.batches) - rng.IntN(min(len(m.batches), 8)+1)
					if keep < 0 {
						keep = 0
					}
					to := m.next()
					if keep < len(m.batches) {
						to = m.bases[keep]
					}
					if to < lastCp.NextOffset {
						continue // as in Raft: what a synced checkpoint covers is never cut
					}
					if err := l.TruncateTo(to); err != nil {
						t.Fatalf("op %d: TruncateTo(%d): %v", op, to, err)
					}
					// TruncateTo syncs the segment it cuts and removes those after it.
					l.mu.RLock()
					for b := range durable {
						if b > l.active.base {
							delete(durable, b)
						}
					}
					durable[l.active.base] = l.active.end
					l.mu.RUnlock()
					m.keepFirst(keep)
				case k < 90:
					o := opts
					o.RetentionBytes = int64(rng.IntN(40000))
					l.SetOptions(o)
					if _, err := l.EnforceRetention(now); err != nil {
						t.Fatal(err)
					}
					l.SetOptions(opts)
					m.keepFrom(l.StartOffset())
				case k < 93:
					opts.SegmentBytes = int64(2048 + rng.IntN(8192))
					opts.IndexIntervalBytes = 1 + rng.IntN(1500)
					l.SetOptions(opts)
				case k < 96:
					if err := l.Close(); err != nil {
						t.Fatal(err)
					}
					l = openLog(t, dir, opts)
					if cp := l.Checkpoint(); cp.AppliedIndex != lastCp.AppliedIndex || !bytes.Equal(cp.Extra, lastCp.Extra) {
						t.Fatalf("op %d: checkpoint %+v after reopen, want %+v", op, cp, lastCp)
					}
					markDurable()
				case k < 98:
					// Power loss: every segment file loses an arbitrary part of what was not durable.
					crash(l)
					names, _ := filepath.Glob(filepath.Join(dir, "*.log"))
					for _, name := range names {
						base, _ := parseSegmentName(filepath.Base(name))
						d, size := durable[base], fileLen(t, name)
						if d < size {
							cut := d + rng.Int64N(size-d+1)
							if err := os.Truncate(name, cut); err != nil {
								t.Fatal(err)
							}
							if rng.IntN(2) == 0 {
								writeJunk(t, rng, name, cut, 1+rng.IntN(500))
							}
						}
					}
					l = openLog(t, dir, opts)
					if l.NextOffset() < lastCp.NextOffset {
						t.Fatalf("op %d: after power loss NextOffset %d, below the synced %d", op, l.NextOffset(), lastCp.NextOffset)
					}
					if cp := l.Checkpoint(); cp.AppliedIndex != lastCp.AppliedIndex {
						t.Fatalf("op %d: checkpoint %d after power loss, want %d", op, cp.AppliedIndex, lastCp.AppliedIndex)
					}
					// What survives is a prefix of what was written.
					keep := 0
					for keep < len(m.batches) && m.bases[keep] < l.NextOffset() {
						keep++
					}
					m.keepFirst(keep)
					if m.next() != l.NextOffset() {
						t.Fatalf("op %d: after power loss NextOffset %d is not a batch boundary of the model", op, l.NextOffset())
					}
					checkLog(t, l, &m)
				default:
					crash(l)
					l = openLog(t, dir, opts)
					if cp := l.Checkpoint(); cp.AppliedIndex != lastCp.AppliedIndex {
						t.Fatalf("op %d: checkpoint %d after crash, want %d", op, cp.AppliedIndex, lastCp.AppliedIndex)
					}
				}
				if l.NextOffset() != m.next() {
					t.Fatalf("op %d: NextOffset %d, model %d", op, l.NextOffset(), m.next())
				}
			}
			checkLog(t, l, &m)
		})
	}
}
