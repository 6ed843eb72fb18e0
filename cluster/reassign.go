package cluster

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/sluicebroker/sluice/quorum"
	"github.com/sluicebroker/sluice/replica"
)

// Partition reassignment: AlterPartitionAssignments (broker) records a target replica set in the
// controller; the partition's leader moves its Raft membership there one step per tick
// (reassignStep), so a step interrupted by a crash or a leader change is simply taken again by
// whoever leads next.

// reassignments tracks the partitions whose step is running on this node.
type reassignments struct {
	mu      sync.Mutex
	running map[uint64]bool
}

// driveReassignments starts a step for every partition being reassigned that this node leads.
func (a *Agent) driveReassignments() {
	md := a.ctl.Metadata()
	for name, t := range md.Topics {
		for _, pm := range t.Partitions {
			if pm.Target == nil {
				continue
			}
			part, ok := a.replicas.Partition(name, pm.Partition)
			if !ok || part.ShardID() != pm.ShardID {
				continue
			}
			if isLeader, _, _ := part.Leader(); !isLeader {
				continue
			}
			a.moves.mu.Lock()
			if a.moves.running == nil {
				a.moves.running = map[uint64]bool{}
			}
			busy := a.moves.running[pm.ShardID]
			a.moves.running[pm.ShardID] = true
			a.moves.mu.Unlock()
			if busy {
				continue
			}
			a.wg.Add(1)
			go func() {
				defer a.wg.Done()
				defer func() {
					a.moves.mu.Lock()
					delete(a.moves.running, pm.ShardID)
					a.moves.mu.Unlock()
				}()
				if err := a.reassignStep(md, part, pm); err != nil && a.ctx.Err() == nil {
					a.log.Info("reassignment step failed; retrying", "topic", name, "partition", pm.Partition, "err", err)
				}
			}()
		}
	}
}

// reassignStep takes the next step toward pm.Target: add a missing target as a learner; promote a
// learner once it is in sync; remove a member outside the target (handing leadership away first if
// that member is this node); when the voters are exactly the target, record completion.
func (a *Agent) reassignStep(md *quorum.Metadata, part *replica.Partition, pm quorum.PartitionMeta) error {
	ctx, cancel := context.WithTimeout(a.ctx, 10*time.Second)
	defer cancel()
	m, err := part.Membership(ctx)
	if err != nil {
		return err
	}
	member := func(set map[uint64]string, id int32) bool { _, ok := set[uint64(id)]; return ok }
	for _, r := range pm.Target {
		if !member(m.Voters, r) && !member(m.NonVoting, r) {
			a.log.Info("reassignment: adding a learner", "topic", part.Topic(), "partition", part.Index(), "broker", r)
			return part.AddLearner(ctx, r, md.Brokers[r].RaftAddr, m.ConfigChangeID)
		}
	}
	for _, r := range pm.Target {
		if member(m.NonVoting, r) {
			if !a.ctl.InSync(r, pm.ShardID) {
				return nil // still catching up; the next tick looks again
			}
			a.log.Info("reassignment: promoting a caught-up learner", "topic", part.Topic(), "partition", part.Index(), "broker", r)
			return part.Promote(ctx, r, md.Brokers[r].RaftAddr, m.ConfigChangeID)
		}
	}
	for id := range m.NonVoting {
		if !slices.Contains(pm.Target, int32(id)) {
			return part.RemoveMember(ctx, int32(id), m.ConfigChangeID)
		}
	}
	for id := range m.Voters {
		r := int32(id)
		if slices.Contains(pm.Target, r) {
			continue
		}
		if r == a.cfg.NodeID {
			// A leader does not remove itself: it hands over to an in-sync target, which goes on.
			for _, t := range pm.Target {
				if a.ctl.InSync(t, pm.ShardID) {
					return part.TransferLeader(t)
				}
			}
			return nil
		}
		a.log.Info("reassignment: removing a replica", "topic", part.Topic(), "partition", part.Index(), "broker", r)
		return part.RemoveMember(ctx, r, m.ConfigChangeID)
	}
	var removed []int32
	for id := range m.Removed {
		removed = append(removed, int32(id))
	}
	slices.Sort(removed)
	a.log.Info("reassignment complete", "topic", part.Topic(), "partition", part.Index(), "replicas", pm.Target)
	return a.ctl.CompleteReassignment(ctx, pm.ShardID, pm.Target, removed)
}
