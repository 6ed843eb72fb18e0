// Package cluster is a broker's agent in the cluster: it applies the controller's metadata to the
// replica manager (which partitions this node hosts, their configs), heartbeats to the controller
// (naming the partitions it follows but lags on), reports the partitions it leads so that every
// broker can route clients to them, hands leadership back to preferred replicas, drives partition
// reassignments this node leads, and answers "who leads this partition, who is in sync" for the
// Kafka API (Metadata, FindCoordinator, produce checks). It knows nothing of Kafka requests.
package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sluicebroker/sluice/quorum"
	"github.com/sluicebroker/sluice/replica"
)

// Config is what the agent needs to know about its node.
type Config struct {
	NodeID int32
	// LeaderRebalanceInterval is how often leadership goes back to preferred replicas (0: 30 s).
	LeaderRebalanceInterval time.Duration
	// LeaderTransfersPerSecond bounds how many of those hand-overs this node starts per second
	// (0: defaultLeaderTransfersPerSecond), so a broker back from a restart regains its thousands
	// of partitions gradually: a partition refuses writes while its leadership moves.
	LeaderTransfersPerSecond int
	// DiskLow reports whether this node's data disk is under its free-space threshold; heartbeats
	// carry it so that leaders elsewhere stop accepting writes this node would have to store.
	// nil: never low.
	DiskLow func() bool
	Logger  *slog.Logger
}

// Agent is one node's agent; Start runs it, Close stops it.
type Agent struct {
	cfg      Config
	ctl      *quorum.Controller
	replicas *replica.Manager
	log      *slog.Logger

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	moves reassignments // partition reassignments this node drives (reassign.go)

	rebalanceLast leaderMove          // the last leader transfer rebalanceLeaders started (leaderLoop only)
	placeTries    map[uint64]placeTry // placeNewLeaders' transfers per shard (leaderLoop only)
}

// Start runs the agent of the node whose controller view is ctl and whose partitions replicas
// hosts: the metadata it applies, heartbeats, leader reports, rebalancing and reassignment steps.
func Start(cfg Config, ctl *quorum.Controller, replicas *replica.Manager) *Agent {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &Agent{cfg: cfg, ctl: ctl, replicas: replicas, log: cfg.Logger, ctx: ctx, cancel: cancel}
	a.wg.Add(3)
	go a.applyMetadataLoop()
	go a.heartbeatLoop()
	go a.leaderLoop()
	return a
}

// Close stops the agent's loops and waits for them and for reassignment steps under way.
func (a *Agent) Close() {
	a.cancel()
	a.wg.Wait()
}

// applyMetadataLoop applies every new version of the cluster metadata to the replica manager.
func (a *Agent) applyMetadataLoop() {
	defer a.wg.Done()
	for {
		changed := a.ctl.Changed() // taken before reading, so no change slips between
		if err := a.replicas.Apply(a.ctl.Metadata()); err != nil {
			a.log.Error("applying metadata", "err", err)
		}
		select {
		case <-changed:
		case <-a.ctx.Done():
			return
		}
	}
}

// defaultLeaderRebalanceInterval is how often a broker hands partitions it leads back to their
// preferred (first) replica once that one is in sync again (Kafka: auto.leader.rebalance.enable,
// every leader.imbalance.check.interval.seconds).
const defaultLeaderRebalanceInterval = 30 * time.Second

// defaultLeaderTransfersPerSecond: a round of rebalancing starts at most this many leader
// transfers, and when more are due the next round comes a second later rather than after the
// whole interval (Redpanda's leader balancer likewise moves a bounded number at a time).
const defaultLeaderTransfersPerSecond = 32

func (a *Agent) heartbeatLoop() {
	defer a.wg.Done()
	t := time.NewTicker(quorum.HeartbeatInterval)
	defer t.Stop()
	for {
		ctx, cancel := context.WithTimeout(a.ctx, 2*quorum.HeartbeatInterval)
		if err := a.ctl.Heartbeat(ctx, a.laggingShards(), a.cfg.DiskLow != nil && a.cfg.DiskLow()); err != nil && a.ctx.Err() == nil {
			a.log.Debug("controller heartbeat failed", "err", err)
		}
		cancel()
		select {
		case <-a.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// laggingShards is what a heartbeat reports as not caught up: the followed partitions behind
// their leaders, and every partition assigned here (or being moved here) whose replica has not
// started yet. A restarting broker opens its partitions one by one (seconds each under load);
// without the latter its first heartbeats would put it back in every ISR at once, and leaders
// would hand it leadership (refusing writes while the transfer lasts) before it has replayed.
func (a *Agent) laggingShards() []uint64 {
	lagging := a.replicas.Lagging()
	for name, t := range a.ctl.Metadata().Topics {
		for _, pm := range t.Partitions {
			if !slices.Contains(pm.Replicas, a.cfg.NodeID) && !slices.Contains(pm.Target, a.cfg.NodeID) {
				continue // a reassignment target is a learner here until promoted, once in sync
			}
			if part, ok := a.replicas.Partition(name, pm.Partition); !ok || part.ShardID() != pm.ShardID {
				lagging = append(lagging, pm.ShardID)
			}
		}
	}
	return lagging
}

// leaderLoop reports leadership changes as they happen (and re-checks every heartbeat, so a report
// lost to a controller election is made again), and rebalances leaders periodically.
func (a *Agent) leaderLoop() {
	defer a.wg.Done()
	tick := time.NewTicker(quorum.HeartbeatInterval)
	defer tick.Stop()
	interval := a.cfg.LeaderRebalanceInterval
	if interval <= 0 {
		interval = defaultLeaderRebalanceInterval
	}
	rebalance := time.NewTicker(interval)
	defer rebalance.Stop()
	for {
		select {
		case <-a.ctx.Done():
			return
		case <-a.replicas.LeaderChanges():
		case <-tick.C:
		case <-rebalance.C:
			if a.rebalanceLeaders() {
				rebalance.Reset(time.Second) // more are due: the next batch in a second
			} else {
				rebalance.Reset(interval)
			}
			continue
		}
		a.placeNewLeaders()
		a.reportLeaders()
		a.driveReassignments()
	}
}

// reportLeaders tells the controller about partitions this node leads that the metadata does not
// show it leading at its current term.
func (a *Agent) reportLeaders() {
	reports := a.replicas.LeaderReports()
	if len(reports) == 0 {
		return
	}
	md := a.ctl.Metadata()
	known := make(map[uint64]quorum.PartitionMeta)
	for _, t := range md.Topics {
		for _, pm := range t.Partitions {
			known[pm.ShardID] = pm
		}
	}
	stale := reports[:0]
	for _, r := range reports {
		if pm, ok := known[r.ShardID]; ok && (pm.Leader != r.Leader || pm.LeaderEpoch != r.Epoch) {
			stale = append(stale, r)
		}
	}
	if len(stale) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(a.ctx, 2*time.Second)
	defer cancel()
	if err := a.ctl.ReportLeaders(ctx, stale); err != nil && a.ctx.Err() == nil {
		a.log.Debug("reporting partition leaders failed", "partitions", len(stale), "err", err)
	}
}

// rebalanceLeaders hands partitions this node leads to their preferred replica when that one is
// alive and in sync, so leadership spreads evenly again after a broker comes back: at most
// LeaderTransfersPerSecond of them per call, taken round robin over the due ones (a transfer that
// keeps failing does not hold back the others). It reports whether more are due.
func (a *Agent) rebalanceLeaders() (more bool) {
	limit := a.cfg.LeaderTransfersPerSecond
	if limit <= 0 {
		limit = defaultLeaderTransfersPerSecond
	}
	due := preferredLeaderMoves(a.ctl.Metadata(), a.cfg.NodeID, func(name string, pm quorum.PartitionMeta) bool {
		part, ok := a.replicas.Partition(name, pm.Partition)
		if !ok || part.ShardID() != pm.ShardID {
			return false
		}
		isLeader, _, _ := part.Leader()
		return isLeader && a.ctl.InSync(pm.Replicas[0], pm.ShardID)
	})
	batch, next := takeRound(due, a.rebalanceLast, limit)
	a.rebalanceLast = next
	for _, mv := range batch {
		part, ok := a.replicas.Partition(mv.topic, mv.partition)
		if !ok {
			continue
		}
		if err := part.TransferLeader(mv.to); err != nil {
			a.log.Debug("leader transfer failed", "topic", mv.topic, "partition", mv.partition, "to", mv.to, "err", err)
			continue
		}
		a.log.Info("handing leadership to the preferred replica", "topic", mv.topic, "partition", mv.partition, "to", mv.to)
	}
	return len(due) > len(batch)
}

// placeNewLeaders hands each partition this node leads whose replica started here less than
// placeWindow ago (a new topic's, mostly) to its preferred replica as soon as that one is in sync, as
// Kafka creates a partition led by its first replica. The first election picks whichever replica
// times out first; rebalanceLeaders moved it up to a LeaderRebalanceInterval later, when clients were
// writing at full speed: a 1 s stall in the rf=3 runs of bench/latency.sh
// (results/2026-12-07-2core-vm-latency-s9). A transfer that did not happen is tried again a second
// later, at most placeTriesMax times per shard. (After a restart the in-sync check holds it back as it
// does rebalanceLeaders: see laggingShards.)
func (a *Agent) placeNewLeaders() {
	if time.Since(a.replicas.LastStarted()) > placeWindow {
		// Nothing started here recently: no partition to look at (this runs every heartbeat), and
		// no tries to remember.
		clear(a.placeTries)
		return
	}
	for name, t := range a.ctl.Metadata().Topics {
		for _, pm := range t.Partitions {
			try := a.placeTries[pm.ShardID]
			if len(pm.Replicas) < 2 || pm.Replicas[0] == a.cfg.NodeID || try.n >= placeTriesMax || time.Since(try.last) < time.Second {
				continue
			}
			part, ok := a.replicas.Partition(name, pm.Partition)
			if !ok || part.ShardID() != pm.ShardID || time.Since(part.Started()) > placeWindow {
				continue
			}
			if isLeader, _, _ := part.Leader(); !isLeader || !a.ctl.InSync(pm.Replicas[0], pm.ShardID) {
				continue
			}
			if a.placeTries == nil {
				a.placeTries = make(map[uint64]placeTry)
			}
			a.placeTries[pm.ShardID] = placeTry{n: try.n + 1, last: time.Now()}
			if err := part.TransferLeader(pm.Replicas[0]); err != nil {
				a.log.Debug("leader transfer failed", "topic", name, "partition", pm.Partition, "to", pm.Replicas[0], "err", err)
				continue
			}
			a.log.Info("handing a new partition to its preferred replica", "topic", name, "partition", pm.Partition, "to", pm.Replicas[0])
		}
	}
}

// placeWindow is how long after its replica started a partition's leadership is placed by
// placeNewLeaders rather than left to rebalanceLeaders.
const placeWindow = 10 * time.Second

// placeTriesMax bounds placeNewLeaders' transfers of one shard, a second apart (a transfer to a
// replica still starting does not happen; asked again at once, it does not either).
const placeTriesMax = 5

type placeTry struct {
	n    int
	last time.Time
}

// leaderMove is one partition to hand to its preferred replica.
type leaderMove struct {
	topic     string
	partition int32
	to        int32
}

// preferredLeaderMoves lists the partitions of md that node self should hand to their preferred
// (first) replica, ordered by topic and partition: those with more than one replica, preferring
// another node, for which movable (self leads it, the preferred replica is in sync) holds.
func preferredLeaderMoves(md *quorum.Metadata, self int32, movable func(string, quorum.PartitionMeta) bool) []leaderMove {
	names := make([]string, 0, len(md.Topics))
	for name := range md.Topics {
		names = append(names, name)
	}
	slices.Sort(names)
	var out []leaderMove
	for _, name := range names {
		for _, pm := range md.Topics[name].Partitions {
			if len(pm.Replicas) < 2 || pm.Replicas[0] == self || !movable(name, pm) {
				continue
			}
			out = append(out, leaderMove{name, pm.Partition, pm.Replicas[0]})
		}
	}
	return out
}

// takeRound takes up to limit moves from due, starting at the first one ordered after last (the
// last move of the previous round; round robin), and returns them with this round's last move.
func takeRound(due []leaderMove, last leaderMove, limit int) ([]leaderMove, leaderMove) {
	if len(due) <= limit {
		if len(due) > 0 {
			last = due[len(due)-1]
		}
		return due, last
	}
	start, _ := slices.BinarySearchFunc(due, last, compareMoves)
	if start < len(due) && compareMoves(due[start], last) == 0 {
		start++
	}
	out := make([]leaderMove, 0, limit)
	for i := 0; i < limit; i++ {
		out = append(out, due[(start+i)%len(due)])
	}
	return out, out[len(out)-1]
}

func compareMoves(a, b leaderMove) int {
	if c := strings.Compare(a.topic, b.topic); c != 0 {
		return c
	}
	return int(a.partition) - int(b.partition)
}

// PartitionLeader is the partition's leader and epoch as best known here: this node's own replica
// knows first hand; otherwise the controller's last report, while that broker is alive. -1: none.
// The controller's word never makes this node the leader: after a restart its report of our old
// leadership is stale until our replica's own election says so.
func (a *Agent) PartitionLeader(topic string, pm quorum.PartitionMeta) (leader, epoch int32) {
	reported := pm.Leader > 0 && pm.Leader != a.cfg.NodeID && a.ctl.Alive(pm.Leader)
	if part, ok := a.replicas.Partition(topic, pm.Partition); ok && part.ShardID() == pm.ShardID {
		_, id, term := part.Leader()
		switch {
		case id >= 0 && term >= pm.LeaderEpoch:
			return id, term
		case reported && pm.LeaderEpoch > term:
			return pm.Leader, pm.LeaderEpoch // elected elsewhere; our replica has not heard yet
		}
		return -1, max(term, pm.LeaderEpoch) // an election, a restart, or cut off from the majority
	}
	if reported {
		return pm.Leader, pm.LeaderEpoch
	}
	return -1, pm.LeaderEpoch
}

// InSyncReplicas is the ISR as known here: the leader, this node's replica if caught up, and the
// others that the controller last heard from and that did not report lagging.
func (a *Agent) InSyncReplicas(topic string, pm quorum.PartitionMeta, leader int32) []int32 {
	isr := make([]int32, 0, len(pm.Replicas))
	for _, r := range pm.Replicas {
		switch {
		case r == leader:
		case r == a.cfg.NodeID:
			part, ok := a.replicas.Partition(topic, pm.Partition)
			if !ok || part.Lagging() {
				continue
			}
		case !a.ctl.InSync(r, pm.ShardID):
			continue
		}
		isr = append(isr, r)
	}
	return isr
}

// PartitionMeta finds a partition in the current metadata.
func (a *Agent) PartitionMeta(topic string, partition int32) (quorum.PartitionMeta, bool) {
	t, ok := a.ctl.Metadata().Topics[topic]
	if !ok || partition < 0 || int(partition) >= len(t.Partitions) {
		return quorum.PartitionMeta{}, false
	}
	return t.Partitions[partition], true
}

// EnoughInSync checks min.insync.replicas for an acks=all produce led by this node.
func (a *Agent) EnoughInSync(part *replica.Partition) bool {
	min := part.MinInSyncReplicas()
	if min <= 1 {
		return true
	}
	pm, ok := a.PartitionMeta(part.Topic(), part.Index())
	if !ok {
		return true // the produce fails on its own
	}
	isr := a.InSyncReplicas(part.Topic(), pm, a.cfg.NodeID)
	if len(isr) < min && a.log.Enabled(a.ctx, slog.LevelDebug) {
		var why []string
		for _, r := range pm.Replicas {
			if r != a.cfg.NodeID {
				why = append(why, fmt.Sprintf("%d:alive=%v,in_sync=%v", r, a.ctl.Alive(r), a.ctl.InSync(r, pm.ShardID)))
			}
		}
		a.log.Debug("not enough in-sync replicas", "topic", part.Topic(), "partition", part.Index(), "isr", isr, "min", min, "others", why)
	}
	return len(isr) >= min
}

// ReplicaDiskLow returns another broker holding a replica of part (or being added as one) that
// reported its disk under its free-space threshold, if there is one. Raft replicates every entry to
// every replica, in sync or not, and a replica that cannot write its log takes its broker down
// (dragonboat panics on a failed LogDB write): a leader refuses produce (KAFKA_STORAGE_ERROR) for
// such a partition, as it does when its own disk is low, until that broker reports space again.
func (a *Agent) ReplicaDiskLow(part *replica.Partition) (int32, bool) {
	if !a.ctl.AnyDiskLow() {
		return 0, false // the common case, on every produce: no metadata lookup
	}
	pm, ok := a.PartitionMeta(part.Topic(), part.Index())
	if !ok {
		return 0, false
	}
	for _, ids := range [][]int32{pm.Replicas, pm.Target} {
		for _, r := range ids {
			if r != a.cfg.NodeID && a.ctl.DiskLow(r) {
				return r, true
			}
		}
	}
	return 0, false
}

// ControllerID is the node leading the controller group, or -1 while there is none.
func (a *Agent) ControllerID() int32 {
	if id, ok := a.ctl.Leader(); ok {
		return int32(id)
	}
	return -1
}
