package quorum

import (
	"context"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	sm "github.com/lni/dragonboat/v4/statemachine"
)

// Broker liveness, like KRaft's broker heartbeats: every broker proposes a heartbeat to the
// controller group every HeartbeatInterval, naming the partitions (shards) it hosts but has not
// caught up on, and whether its data disk is under its free-space threshold. A broker unheard of for SessionTimeout is dead: it leaves every ISR and a
// partition it was last seen leading reports no leader until a live one is elected.
//
// Liveness is judged by each node's own clock at the time it applies a heartbeat, not by the
// proposer's timestamp, so brokers need no closely synchronised clocks. It is kept out of Metadata (a
// heartbeat does not bump the version or wake watchers) and out of snapshots: after a restart it
// refills within one HeartbeatInterval.
const (
	HeartbeatInterval = 500 * time.Millisecond
	SessionTimeout    = 3 * time.Second
	// replayedHeartbeat: a heartbeat proposed longer ago than this (by the proposer's clock) is
	// being replayed, not received; generous, so modest clock skew between brokers does no harm.
	replayedHeartbeat = 30 * time.Second
)

// LeaderReport is one partition's Raft leader and term as the reporting node sees them.
type LeaderReport struct {
	ShardID uint64 `json:"shard"`
	Leader  int32  `json:"leader"`
	Epoch   int32  `json:"epoch"`
}

// brokerLive is what the controller last heard from one broker.
type brokerLive struct {
	seen    atomic.Int64                        // local time (UnixNano) the last heartbeat was applied
	lagging atomic.Pointer[map[uint64]struct{}] // shards the broker reported as not caught up
	diskLow atomic.Bool                         // the broker reported its disk under its threshold
}

// liveness is the table of brokerLive, shared by the state machine (writer) and readers.
type liveness struct {
	mu      sync.RWMutex
	brokers map[int32]*brokerLive
	// diskLow counts the brokers whose last heartbeat reported a low disk, so that the produce
	// path's check costs one atomic load while no broker does.
	diskLow atomic.Int32
}

func (l *liveness) get(id int32, create bool) *brokerLive {
	l.mu.RLock()
	b := l.brokers[id]
	l.mu.RUnlock()
	if b != nil || !create {
		return b
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.brokers == nil {
		l.brokers = make(map[int32]*brokerLive)
	}
	if b = l.brokers[id]; b == nil {
		b = new(brokerLive)
		l.brokers[id] = b
	}
	return b
}

func (l *liveness) record(id int32, lagging []uint64, diskLow bool, now time.Time) {
	b := l.get(id, true)
	if b.diskLow.Swap(diskLow) != diskLow {
		if diskLow {
			l.diskLow.Add(1)
		} else {
			l.diskLow.Add(-1)
		}
	}
	var set map[uint64]struct{}
	if len(lagging) > 0 {
		set = make(map[uint64]struct{}, len(lagging))
		for _, s := range lagging {
			set[s] = struct{}{}
		}
	}
	b.lagging.Store(&set)
	b.seen.Store(now.UnixNano())
}

// Heartbeat tells the controller this broker is alive, which of its partitions (shard ids) are
// not caught up with their leaders, and whether its disk is low on free space.
func (c *Controller) Heartbeat(ctx context.Context, lagging []uint64, diskLow bool) error {
	_, _, err := c.propose(ctx, &heartbeatCmd{Node: int32(c.h.cfg.NodeID), TimeMs: time.Now().UnixMilli(), Lagging: lagging, DiskLow: diskLow})
	return err
}

// heartbeatCmd changes no Metadata (liveCommand): it goes to the liveness table.
type heartbeatCmd struct {
	noChecks
	Node    int32    `json:"node,omitempty"`
	TimeMs  int64    `json:"time_ms,omitempty"` // the proposer's clock: tells a replayed entry
	Lagging []uint64 `json:"shards,omitempty"`
	DiskLow bool     `json:"disk_low,omitempty"`
}

func (*heartbeatCmd) op() string { return "heartbeat" }

func (*heartbeatCmd) apply(*Metadata) (*Metadata, sm.Result) { return nil, sm.Result{} }

// applyLive records a heartbeat.
func (cmd *heartbeatCmd) applyLive(l *liveness) sm.Result {
	if cmd.Node <= 0 {
		return invalid("heartbeat without a node")
	}
	now := time.Now()
	if now.Sub(time.UnixMilli(cmd.TimeMs)) > replayedHeartbeat {
		return sm.Result{} // replayed from the log after a restart: says nothing about now
	}
	l.record(cmd.Node, cmd.Lagging, cmd.DiskLow, now)
	return sm.Result{}
}

// ReportLeaders records partition leaders observed here. A report older (lower epoch) than what
// the controller holds is ignored, so reports from several brokers converge.
func (c *Controller) ReportLeaders(ctx context.Context, reports []LeaderReport) error {
	if len(reports) == 0 {
		return nil
	}
	_, _, err := c.propose(ctx, &reportLeadersCmd{Leaders: reports})
	return err
}

type reportLeadersCmd struct {
	noChecks
	Leaders []LeaderReport `json:"leaders,omitempty"`
}

func (*reportLeadersCmd) op() string { return "report_leaders" }

func (cmd *reportLeadersCmd) apply(md *Metadata) (*Metadata, sm.Result) {
	return applyLeaders(md, cmd.Leaders), sm.Result{}
}

// Alive reports whether broker id heartbeated within SessionTimeout. This node is always alive.
func (c *Controller) Alive(id int32) bool {
	if uint64(id) == c.h.cfg.NodeID {
		return true
	}
	b := c.live.get(id, false)
	return b != nil && time.Since(time.Unix(0, b.seen.Load())) < SessionTimeout
}

// InSync reports whether broker id's replica of shard counts as in sync: the broker is alive and
// did not report the shard as lagging in its last heartbeat. The caller decides for itself (its
// own lag is known locally).
func (c *Controller) InSync(id int32, shard uint64) bool {
	if !c.Alive(id) {
		return false
	}
	b := c.live.get(id, false)
	if b == nil {
		return uint64(id) == c.h.cfg.NodeID
	}
	if set := b.lagging.Load(); set != nil {
		_, lag := (*set)[shard]
		return !lag
	}
	return true
}

// AnyDiskLow reports whether some broker (alive or not) last reported a low disk.
func (c *Controller) AnyDiskLow() bool { return c.live.diskLow.Load() > 0 }

// DiskLow reports whether broker id is alive and said in its last heartbeat that its data disk has
// less free space than its threshold (storage-min-free-bytes). This node's own state is known
// locally; for it the last heartbeat's is returned.
func (c *Controller) DiskLow(id int32) bool {
	if !c.AnyDiskLow() {
		return false
	}
	b := c.live.get(id, false)
	return b != nil && c.Alive(id) && b.diskLow.Load()
}

// applyLeaders returns md with the newer of the reported leaders, or nil if none is newer.
func applyLeaders(md *Metadata, reports []LeaderReport) *Metadata {
	type where struct {
		topic string
		index int
	}
	byShard := make(map[uint64]where, len(reports))
	for _, r := range reports {
		byShard[r.ShardID] = where{index: -1}
	}
	for name, t := range md.Topics {
		for i, p := range t.Partitions {
			if _, ok := byShard[p.ShardID]; ok {
				byShard[p.ShardID] = where{name, i}
			}
		}
	}
	var next *Metadata
	for _, r := range reports {
		w := byShard[r.ShardID]
		if w.index < 0 {
			continue // deleted meanwhile
		}
		cur := md
		if next != nil {
			cur = next
		}
		pm := cur.Topics[w.topic].Partitions[w.index]
		if r.Epoch < pm.LeaderEpoch || r.Epoch == pm.LeaderEpoch && r.Leader == pm.Leader || !slices.Contains(pm.Replicas, r.Leader) && !slices.Contains(pm.Target, r.Leader) {
			continue
		}
		if next == nil {
			n := *md
			n.Topics = maps.Clone(md.Topics)
			next = &n
		}
		tm := next.Topics[w.topic]
		if tm == md.Topics[w.topic] { // first change to this topic: copy it and its partitions
			t := *tm
			t.Partitions = append([]PartitionMeta(nil), tm.Partitions...)
			next.Topics[w.topic] = &t
			tm = &t
		}
		tm.Partitions[w.index].Leader = r.Leader
		tm.Partitions[w.index].LeaderEpoch = r.Epoch
	}
	return next
}
