package replica

import (
	"time"

	"github.com/sluicebroker/sluice/quorum"
)

// Replication health of this node's partitions, for the cluster metadata: which partitions this
// node leads (reported to the controller so every broker can route clients) and which of the
// partitions it follows have fallen behind (reported in heartbeats, so they leave the ISR).
//
// A follower is in sync while Raft's ReadIndex, asked through its leader, completes within
// Config.ReplicaLagMax: it then holds everything the leader had committed when it asked. That is
// Kafka's replica.lag.time.max.ms, measured with Raft's own machinery rather than fetch offsets.

// defaultReplicaLagMax is Kafka's replica.lag.time.max.ms default divided by three: Raft
// followers apply as they receive, so a healthy one answers in milliseconds.
const defaultReplicaLagMax = 10 * time.Second

// lagCheckInterval is how often each followed partition is checked.
const lagCheckInterval = time.Second

// LeaderChanges delivers a value after the leader of some partition hosted here changed
// (coalesced). One consumer only: the broker's leader reporter.
func (m *Manager) LeaderChanges() <-chan struct{} { return m.host.LeaderChanges() }

// LeaderReports lists the partitions this node leads, with their Raft terms.
func (m *Manager) LeaderReports() []quorum.LeaderReport {
	var out []quorum.LeaderReport
	for _, p := range m.Partitions() {
		if isLeader, id, epoch := p.Leader(); isLeader {
			out = append(out, quorum.LeaderReport{ShardID: p.shardID, Leader: id, Epoch: epoch})
		}
	}
	return out
}

// Lagging lists the shards of the partitions this node follows but has not caught up on.
func (m *Manager) Lagging() []uint64 {
	var out []uint64
	for _, p := range m.Partitions() {
		if p.Lagging() {
			out = append(out, p.shardID)
		}
	}
	return out
}

// Lagging reports whether this replica is behind its leader (see the package comment above). A
// leader is never lagging; a follower is until its first check succeeds.
func (p *Partition) Lagging() bool {
	if isLeader, _, _ := p.Leader(); isLeader {
		return false
	}
	return !p.inSync.Load()
}

// TransferLeader asks Raft to hand this partition's leadership to broker id (asynchronous; a
// no-op if this node does not lead it).
func (p *Partition) TransferLeader(id int32) error {
	return p.host.TransferLeader(p.shardID, uint64(id))
}

// ConfirmLeadership reports whether this node still leads the partition after a Raft round with a
// quorum (ReadIndex), with everything committed before the call applied. A leader cut off or
// paused may still believe it leads; this finds out.
func (p *Partition) ConfirmLeadership(timeout time.Duration) bool {
	if isLeader, _, _ := p.Leader(); !isLeader {
		return false
	}
	if p.host.CaughtUp(p.shardID, timeout) != nil {
		return false
	}
	isLeader, _, _ := p.Leader()
	return isLeader
}

// lagLoop checks every followed partition each lagCheckInterval, one ReadIndex in flight per
// partition.
func (m *Manager) lagLoop() {
	defer m.wg.Done()
	t := time.NewTicker(lagCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
		}
		for _, p := range m.Partitions() {
			if isLeader, _, _ := p.Leader(); isLeader {
				p.inSync.Store(true) // a leader that loses office starts its followership in sync
				continue
			}
			if !p.lagCheck.CompareAndSwap(false, true) {
				continue // the last check is still waiting; it ends by ReplicaLagMax
			}
			m.checks.Add(1)
			go func() {
				defer m.checks.Done()
				defer p.lagCheck.Store(false)
				start := time.Now()
				err := m.host.CaughtUp(p.shardID, m.cfg.ReplicaLagMax)
				if was := p.inSync.Swap(err == nil); was != (err == nil) {
					m.logger.Debug("replica lag check changed", "topic", p.Topic(), "partition", p.Index(),
						"in_sync", err == nil, "took", time.Since(start), "err", err)
				}
			}()
		}
	}
}
