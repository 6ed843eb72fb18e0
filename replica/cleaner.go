package replica

import (
	"math"
	"time"

	"github.com/sluicebroker/sluice/metrics"
	"github.com/sluicebroker/sluice/segment"
)

// The log cleaner of cleanup.policy=compact topics: one goroutine per broker (Kafka's
// log.cleaner.threads=1) that picks the partition whose log is dirtiest and compacts it
// (segment/clean.go does the work), throttled to Config.CleanerIOBytesPerSecond.
//
// Every replica compacts its own log, leader and followers alike, as Kafka's brokers do: the segment
// files are the Raft log, and the cleaner rewrites only sealed segments wholly below the lowest offset
// Raft may still read back (its snapshot point), the last stable offset and the high watermark, so
// Raft never reads a rewritten position and every replica keeps the same latest record per key at the
// same offset. A follower catching up by snapshot receives the leader's compacted segments; a new
// leader serves its own compacted view. When the Raft floor is what holds a due cleaning back, the
// cleaner asks for a Raft snapshot first, as retention does.

// cleanerLoop runs cleanings until the Manager closes: the dirtiest due partition at once, else a
// pause of CleanerBackoff (Kafka's log.cleaner.backoff.ms).
func (m *Manager) cleanerLoop() {
	defer m.wg.Done()
	for {
		cleaned := false
		if p := m.dirtiest(time.Now()); p != nil {
			cleaned = m.clean(p)
		}
		wait := m.cfg.CleanerBackoff
		if cleaned {
			wait = 0
		}
		select {
		case <-m.stop:
			return
		case <-time.After(wait):
		}
	}
}

// dirtiest returns the compacted partition due for cleaning with the highest dirty ratio (one past
// max.compaction.lag.ms first), or nil. It records each partition's ratio for the metrics.
func (m *Manager) dirtiest(now time.Time) *Partition {
	var best *Partition
	bestScore := -1.0
	for _, p := range m.Partitions() {
		if !p.Compact() {
			continue
		}
		d, tc, ok := p.dirty(now, false)
		if !ok {
			continue
		}
		p.dirtyRatio.Store(math.Float64bits(d.Ratio()))
		score := d.Ratio()
		if overdue(d, tc, now) {
			score += 1
		} else if d.DirtyBytes == 0 || d.Ratio() < tc.MinCleanableRatio {
			continue
		}
		if score > bestScore {
			best, bestScore = p, score
		}
	}
	return best
}

// overdue: the oldest dirty record is older than max.compaction.lag.ms.
func overdue(d segment.DirtyStats, tc *TopicConfig, now time.Time) bool {
	return tc.MaxCompactionLag > 0 && d.DirtyBytes > 0 && d.OldestDirtyMs >= 0 &&
		now.UnixMilli()-d.OldestDirtyMs >= tc.MaxCompactionLag.Milliseconds()
}

// dirty reports the dirty state of the part of the log the cleaner may take: below the last stable
// offset and the high watermark, and with raftFloor also below the Raft floor.
func (p *Partition) dirty(now time.Time, raftFloor bool) (segment.DirtyStats, *TopicConfig, bool) {
	o, log, tc, ok := p.cleanOptions(now, raftFloor)
	if !ok {
		return segment.DirtyStats{}, nil, false
	}
	return log.Dirty(o), tc, true
}

// cleanOptions are a cleaning's options from the topic config and the partition's offsets.
func (p *Partition) cleanOptions(now time.Time, raftFloor bool) (segment.CleanOptions, *segment.Log, *TopicConfig, bool) {
	log := p.log.Load()
	tc := p.options()
	if log == nil || !tc.Compact {
		return segment.CleanOptions{}, nil, nil, false
	}
	end := p.LastStableOffset()
	if raftFloor {
		if store := p.host.RaftLog(); store != nil {
			rl, err := store.Partition(p.shardID, p.host.NodeID())
			if err != nil {
				return segment.CleanOptions{}, nil, nil, false
			}
			end = min(end, rl.RetentionFloor())
		}
	}
	return segment.CleanOptions{End: end, Now: now, DeleteRetention: tc.DeleteRetention, MinCompactionLag: tc.MinCompactionLag}, log, tc, true
}

// clean compacts p's log once; it reports whether it cleaned anything.
func (m *Manager) clean(p *Partition) bool {
	now := time.Now()
	o, log, _, ok := p.cleanOptions(now, false)
	if !ok {
		return false
	}
	// Raft may still read back what the cleaning wants: ask for a snapshot first, so its floor moves.
	if store := p.host.RaftLog(); store != nil {
		rl, err := store.Partition(p.shardID, p.host.NodeID())
		if err != nil {
			return false
		}
		if target := o.End; rl.RetentionFloor() < target {
			if err := p.host.CompactLog(p.shardID, compactTimeout); err != nil {
				p.logger.Debug("log cleaner: raft log compaction failed", "err", err)
			}
			for deadline := time.Now().Add(compactTimeout); rl.RetentionFloor() < target && time.Now().Before(deadline); {
				time.Sleep(10 * time.Millisecond)
			}
		}
		o.End = min(o.End, rl.RetentionFloor())
	}
	for _, a := range p.AbortedTxns(nil, 0, o.End) {
		o.Aborted = append(o.Aborted, segment.AbortedRange{ProducerID: a.ProducerID, First: a.FirstOffset, Last: a.LastOffset})
	}
	t := throttle{rate: float64(m.cfg.CleanerIOBytesPerSecond), start: time.Now()}
	o.Throttle = t.add
	start := time.Now()
	st, err := log.Clean(o)
	metrics.CleanerBytes.WithLabelValues("read").Add(float64(st.Read))
	metrics.CleanerBytes.WithLabelValues("written").Add(float64(st.Written))
	if err != nil {
		metrics.CleanerRuns.WithLabelValues("error").Inc()
		p.logger.Warn("log cleaner failed", "err", err)
		return false
	}
	metrics.CleanerRuns.WithLabelValues("ok").Inc()
	if d, _, ok := p.dirty(now, false); ok {
		p.dirtyRatio.Store(math.Float64bits(d.Ratio()))
	}
	p.cleanedTo.Store(st.FirstDirty)
	if st.Read > 0 {
		p.logger.Debug("log cleaner compacted", "segments", st.Segments, "read", st.Read, "written", st.Written,
			"clean_to", st.FirstDirty, "took", time.Since(start))
	}
	return st.Segments > 0
}

// DirtyRatio is the share of the cleanable log not yet cleaned, as the cleaner last saw it (0 for
// a topic that is not compacted).
func (p *Partition) DirtyRatio() float64 { return math.Float64frombits(p.dirtyRatio.Load()) }

// throttle bounds a cleaning's I/O to rate bytes per second (<= 0: unbounded) by sleeping.
type throttle struct {
	rate  float64
	start time.Time
	bytes int64
}

func (t *throttle) add(n int64) {
	if t.rate <= 0 {
		return
	}
	t.bytes += n
	want := time.Duration(float64(t.bytes) / t.rate * float64(time.Second))
	if el := time.Since(t.start); want > el+time.Millisecond {
		time.Sleep(want - el)
	}
}
