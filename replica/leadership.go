package replica

import (
	"errors"
	"time"

	"github.com/sluicebroker/sluice/quorum"
)

// Replication health of this node's partitions, for the cluster metadata: which partitions this
// node leads (reported to the controller so every broker can route clients) and which of the
// partitions it follows have fallen behind (reported in heartbeats, so they leave the ISR).
//
// A follower is in sync while a Raft ReadIndex asked through its leader has succeeded within the
// last Config.ReplicaLagMax: it then held everything the leader had committed when it asked. That
// is Kafka's replica.lag.time.max.ms, measured with Raft's own machinery rather than fetch offsets.

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
	p.transferring()
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

// lagCheckTimeout bounds one check. A failed check only means "not confirmed this time": a
// follower leaves the ISR when no check has succeeded for ReplicaLagMax (Kafka's
// lastCaughtUpTime). One check dropped during an election, or sent to a leader that has just
// died, therefore neither takes the follower out at once nor, hanging for ReplicaLagMax, keeps
// the next check from being made.
func (m *Manager) lagCheckTimeout() time.Duration {
	return max(m.cfg.ReplicaLagMax/4, lagCheckInterval)
}

var errNotCaughtUp = errors.New("replica: no successful lag check within replica lag max")

type lagResult struct {
	p     *Partition
	asked time.Time // a successful check proves the follower had everything committed by then
	took  time.Duration
	err   error
}

// lagLoop checks every followed partition each lagCheckInterval, one ReadIndex in flight per
// partition, and keeps each one's last successful check: it alone owns that map.
func (m *Manager) lagLoop() {
	defer m.wg.Done()
	t := time.NewTicker(lagCheckInterval)
	defer t.Stop()
	caughtUp := make(map[*Partition]time.Time)
	results := make(chan lagResult)
	setInSync := func(p *Partition, in bool, why lagResult) {
		if was := p.inSync.Swap(in); was != in {
			m.logger.Debug("replica lag check changed", "topic", p.Topic(), "partition", p.Index(),
				"in_sync", in, "took", why.took, "err", why.err)
		}
	}
	for {
		select {
		case <-m.stop:
			return
		case r := <-results:
			if r.err == nil {
				if r.asked.After(caughtUp[r.p]) {
					caughtUp[r.p] = r.asked
				}
				setInSync(r.p, true, r)
			} else if last, ok := caughtUp[r.p]; !ok || time.Since(last) >= m.cfg.ReplicaLagMax {
				setInSync(r.p, false, r)
			}
			continue
		case <-t.C:
		}
		parts := m.Partitions()
		hosted := make(map[*Partition]bool, len(parts))
		for _, p := range parts {
			hosted[p] = true
			if isLeader, _, _ := p.Leader(); isLeader {
				// A leader that loses office starts its followership in sync, with ReplicaLagMax
				// to confirm it.
				caughtUp[p] = time.Now()
				p.inSync.Store(true)
				p.prepareWrites()
				continue
			}
			if last, ok := caughtUp[p]; (!ok || time.Since(last) >= m.cfg.ReplicaLagMax) && p.inSync.Load() {
				setInSync(p, false, lagResult{err: errNotCaughtUp}) // even while a check hangs
			}
			if !p.lagCheck.CompareAndSwap(false, true) {
				continue // the last check is still waiting; it ends by lagCheckTimeout
			}
			m.checks.Add(1)
			go func() {
				defer m.checks.Done()
				defer p.lagCheck.Store(false)
				r := lagResult{p: p, asked: time.Now()}
				r.err = m.host.CaughtUp(p.shardID, m.lagCheckTimeout())
				r.took = time.Since(r.asked)
				select {
				case results <- r:
				case <-m.stop:
				}
			}()
		}
		for p := range caughtUp {
			if !hosted[p] {
				delete(caughtUp, p)
			}
		}
	}
}
