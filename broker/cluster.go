package broker

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/sluicebroker/sluice/quorum"
	"github.com/sluicebroker/sluice/replica"
)

// The broker's part in the cluster: it heartbeats to the controller (naming the partitions it
// follows but lags on), reports the partitions it leads so that every broker can route clients to
// them, hands leadership back to preferred replicas, and answers "who leads this partition, who is
// in sync" for Metadata, FindCoordinator and produce checks.

// defaultLeaderRebalanceInterval is how often a broker hands partitions it leads back to their
// preferred (first) replica once that one is in sync again (Kafka: auto.leader.rebalance.enable,
// every leader.imbalance.check.interval.seconds).
const defaultLeaderRebalanceInterval = 30 * time.Second

// startCluster runs the heartbeat, leader-report and rebalance loops until Close.
func (b *Broker) startCluster() {
	b.wg.Add(2)
	go b.heartbeatLoop()
	go b.leaderLoop()
}

func (b *Broker) heartbeatLoop() {
	defer b.wg.Done()
	t := time.NewTicker(quorum.HeartbeatInterval)
	defer t.Stop()
	for {
		ctx, cancel := context.WithTimeout(b.ctx, 2*quorum.HeartbeatInterval)
		if err := b.ctl.Heartbeat(ctx, b.laggingShards()); err != nil && b.ctx.Err() == nil {
			b.log.Debug("controller heartbeat failed", "err", err)
		}
		cancel()
		select {
		case <-b.ctx.Done():
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
func (b *Broker) laggingShards() []uint64 {
	lagging := b.replicas.Lagging()
	for name, t := range b.ctl.Metadata().Topics {
		for _, pm := range t.Partitions {
			if !slices.Contains(pm.Replicas, b.cfg.NodeID) && !slices.Contains(pm.Target, b.cfg.NodeID) {
				continue // a reassignment target is a learner here until promoted, once in sync
			}
			if part, ok := b.replicas.Partition(name, pm.Partition); !ok || part.ShardID() != pm.ShardID {
				lagging = append(lagging, pm.ShardID)
			}
		}
	}
	return lagging
}

// leaderLoop reports leadership changes as they happen (and re-checks every heartbeat, so a report
// lost to a controller election is made again), and rebalances leaders periodically.
func (b *Broker) leaderLoop() {
	defer b.wg.Done()
	tick := time.NewTicker(quorum.HeartbeatInterval)
	defer tick.Stop()
	interval := b.cfg.LeaderRebalanceInterval
	if interval <= 0 {
		interval = defaultLeaderRebalanceInterval
	}
	rebalance := time.NewTicker(interval)
	defer rebalance.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-b.replicas.LeaderChanges():
		case <-tick.C:
		case <-rebalance.C:
			b.rebalanceLeaders()
			continue
		}
		b.reportLeaders()
		b.driveReassignments()
	}
}

// reportLeaders tells the controller about partitions this node leads that the metadata does not
// show it leading at its current term.
func (b *Broker) reportLeaders() {
	reports := b.replicas.LeaderReports()
	if len(reports) == 0 {
		return
	}
	md := b.ctl.Metadata()
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
	ctx, cancel := context.WithTimeout(b.ctx, 2*time.Second)
	defer cancel()
	if err := b.ctl.ReportLeaders(ctx, stale); err != nil && b.ctx.Err() == nil {
		b.log.Debug("reporting partition leaders failed", "partitions", len(stale), "err", err)
	}
}

// rebalanceLeaders hands each partition this node leads to its preferred replica when that one is
// alive and in sync, so leadership spreads evenly again after a broker comes back.
func (b *Broker) rebalanceLeaders() {
	md := b.ctl.Metadata()
	for name, t := range md.Topics {
		for _, pm := range t.Partitions {
			if len(pm.Replicas) < 2 || pm.Replicas[0] == b.cfg.NodeID {
				continue
			}
			part, ok := b.replicas.Partition(name, pm.Partition)
			if !ok || part.ShardID() != pm.ShardID {
				continue
			}
			preferred := pm.Replicas[0]
			if isLeader, _, _ := part.Leader(); !isLeader || !b.ctl.InSync(preferred, pm.ShardID) {
				continue
			}
			if err := part.TransferLeader(preferred); err != nil {
				b.log.Debug("leader transfer failed", "topic", name, "partition", pm.Partition, "to", preferred, "err", err)
				continue
			}
			b.log.Info("handing leadership to the preferred replica", "topic", name, "partition", pm.Partition, "to", preferred)
		}
	}
}

// partitionLeader is the partition's leader and epoch as best known here: this node's own replica
// knows first hand; otherwise the controller's last report, while that broker is alive. -1: none.
// The controller's word never makes this node the leader: after a restart its report of our old
// leadership is stale until our replica's own election says so.
func (b *Broker) partitionLeader(topic string, pm quorum.PartitionMeta) (leader, epoch int32) {
	reported := pm.Leader > 0 && pm.Leader != b.cfg.NodeID && b.ctl.Alive(pm.Leader)
	if part, ok := b.replicas.Partition(topic, pm.Partition); ok && part.ShardID() == pm.ShardID {
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

// inSyncReplicas is the ISR as known here: the leader, this node's replica if caught up, and the
// others that the controller last heard from and that did not report lagging.
func (b *Broker) inSyncReplicas(topic string, pm quorum.PartitionMeta, leader int32) []int32 {
	isr := make([]int32, 0, len(pm.Replicas))
	for _, r := range pm.Replicas {
		switch {
		case r == leader:
		case r == b.cfg.NodeID:
			part, ok := b.replicas.Partition(topic, pm.Partition)
			if !ok || part.Lagging() {
				continue
			}
		case !b.ctl.InSync(r, pm.ShardID):
			continue
		}
		isr = append(isr, r)
	}
	return isr
}

// partitionMeta finds a partition in the current metadata.
func (b *Broker) partitionMeta(topic string, partition int32) (quorum.PartitionMeta, bool) {
	t, ok := b.ctl.Metadata().Topics[topic]
	if !ok || partition < 0 || int(partition) >= len(t.Partitions) {
		return quorum.PartitionMeta{}, false
	}
	return t.Partitions[partition], true
}

// enoughInSync checks min.insync.replicas for an acks=all produce led by this node.
func (b *Broker) enoughInSync(part *replica.Partition) bool {
	min := part.MinInSyncReplicas()
	if min <= 1 {
		return true
	}
	pm, ok := b.partitionMeta(part.Topic(), part.Index())
	if !ok {
		return true // the produce fails on its own
	}
	isr := b.inSyncReplicas(part.Topic(), pm, b.cfg.NodeID)
	if len(isr) < min && b.log.Enabled(b.ctx, slog.LevelDebug) {
		var why []string
		for _, r := range pm.Replicas {
			if r != b.cfg.NodeID {
				why = append(why, fmt.Sprintf("%d:alive=%v,in_sync=%v", r, b.ctl.Alive(r), b.ctl.InSync(r, pm.ShardID)))
			}
		}
		b.log.Debug("not enough in-sync replicas", "topic", part.Topic(), "partition", part.Index(), "isr", isr, "min", min, "others", why)
	}
	return len(isr) >= min
}

// controllerID is the node leading the controller group, or -1 while there is none.
func (b *Broker) controllerID() int32 {
	if id, ok := b.ctl.Leader(); ok {
		return int32(id)
	}
	return -1
}
