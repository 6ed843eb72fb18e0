package broker

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicebroker/sluice/quorum"
	"github.com/sluicebroker/sluice/replica"
)

// Partition reassignment: AlterPartitionAssignments records a target replica set in the controller;
// the partition's leader moves its Raft membership there one step per tick (reassignStep), so a step
// interrupted by a crash or a leader change is simply taken again by whoever leads next.

// reassignments tracks the partitions whose step is running on this node.
type reassignments struct {
	mu      sync.Mutex
	running map[uint64]bool
}

func (b *Broker) handleAlterPartitionAssignments(req *kmsg.AlterPartitionAssignmentsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.AlterPartitionAssignmentsResponse)
	timeout := time.Duration(req.TimeoutMillis) * time.Millisecond
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	for _, rt := range req.Topics {
		st := kmsg.NewAlterPartitionAssignmentsResponseTopic()
		st.Topic = rt.Topic
		for _, rp := range rt.Partitions {
			sp := kmsg.NewAlterPartitionAssignmentsResponseTopicPartition()
			sp.Partition = rp.Partition
			if err := b.ctl.Reassign(ctx, rt.Topic, rp.Partition, rp.Replicas); err != nil {
				sp.ErrorCode, sp.ErrorMessage = errorCode(err), errorMessage(err)
			}
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp
}

func (b *Broker) handleListPartitionReassignments(req *kmsg.ListPartitionReassignmentsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.ListPartitionReassignmentsResponse)
	md := b.ctl.Metadata()
	add := func(name string, pm quorum.PartitionMeta, into *kmsg.ListPartitionReassignmentsResponseTopic) {
		if pm.Target == nil {
			return
		}
		sp := kmsg.NewListPartitionReassignmentsResponseTopicPartition()
		sp.Partition = pm.Partition
		sp.Replicas = slices.Clone(pm.Replicas) // Kafka lists the union while moving
		for _, r := range pm.Target {
			if !slices.Contains(pm.Replicas, r) {
				sp.Replicas = append(sp.Replicas, r)
				sp.AddingReplicas = append(sp.AddingReplicas, r)
			}
		}
		for _, r := range pm.Replicas {
			if !slices.Contains(pm.Target, r) {
				sp.RemovingReplicas = append(sp.RemovingReplicas, r)
			}
		}
		into.Partitions = append(into.Partitions, sp)
	}
	if req.Topics == nil { // every reassignment in progress
		for name, t := range md.Topics {
			st := kmsg.NewListPartitionReassignmentsResponseTopic()
			st.Topic = name
			for _, pm := range t.Partitions {
				add(name, pm, &st)
			}
			if len(st.Partitions) > 0 {
				resp.Topics = append(resp.Topics, st)
			}
		}
		return resp
	}
	for _, rt := range req.Topics {
		t, ok := md.Topics[rt.Topic]
		if !ok {
			continue // Kafka omits unknown partitions
		}
		st := kmsg.NewListPartitionReassignmentsResponseTopic()
		st.Topic = rt.Topic
		for _, p := range rt.Partitions {
			if p >= 0 && int(p) < len(t.Partitions) {
				add(rt.Topic, t.Partitions[p], &st)
			}
		}
		if len(st.Partitions) > 0 {
			resp.Topics = append(resp.Topics, st)
		}
	}
	return resp
}

// driveReassignments starts a step for every partition being reassigned that this node leads.
func (b *Broker) driveReassignments() {
	md := b.ctl.Metadata()
	for name, t := range md.Topics {
		for _, pm := range t.Partitions {
			if pm.Target == nil {
				continue
			}
			part, ok := b.replicas.Partition(name, pm.Partition)
			if !ok || part.ShardID() != pm.ShardID {
				continue
			}
			if isLeader, _, _ := part.Leader(); !isLeader {
				continue
			}
			b.moves.mu.Lock()
			if b.moves.running == nil {
				b.moves.running = map[uint64]bool{}
			}
			busy := b.moves.running[pm.ShardID]
			b.moves.running[pm.ShardID] = true
			b.moves.mu.Unlock()
			if busy {
				continue
			}
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				defer func() {
					b.moves.mu.Lock()
					delete(b.moves.running, pm.ShardID)
					b.moves.mu.Unlock()
				}()
				if err := b.reassignStep(md, part, pm); err != nil && b.ctx.Err() == nil {
					b.log.Info("reassignment step failed; retrying", "topic", name, "partition", pm.Partition, "err", err)
				}
			}()
		}
	}
}

// reassignStep takes the next step toward pm.Target: add a missing target as a learner; promote a
// learner once it is in sync; remove a member outside the target (handing leadership away first if
// that member is this node); when the voters are exactly the target, record completion.
func (b *Broker) reassignStep(md *quorum.Metadata, part *replica.Partition, pm quorum.PartitionMeta) error {
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	m, err := part.Membership(ctx)
	if err != nil {
		return err
	}
	member := func(set map[uint64]string, id int32) bool { _, ok := set[uint64(id)]; return ok }
	for _, r := range pm.Target {
		if !member(m.Voters, r) && !member(m.NonVoting, r) {
			b.log.Info("reassignment: adding a learner", "topic", part.Topic(), "partition", part.Index(), "broker", r)
			return part.AddLearner(ctx, r, md.Brokers[r].RaftAddr, m.ConfigChangeID)
		}
	}
	for _, r := range pm.Target {
		if member(m.NonVoting, r) {
			if !b.ctl.InSync(r, pm.ShardID) {
				return nil // still catching up; the next tick looks again
			}
			b.log.Info("reassignment: promoting a caught-up learner", "topic", part.Topic(), "partition", part.Index(), "broker", r)
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
		if r == b.cfg.NodeID {
			// A leader does not remove itself: it hands over to an in-sync target, which goes on.
			for _, t := range pm.Target {
				if b.ctl.InSync(t, pm.ShardID) {
					return part.TransferLeader(t)
				}
			}
			return nil
		}
		b.log.Info("reassignment: removing a replica", "topic", part.Topic(), "partition", part.Index(), "broker", r)
		return part.RemoveMember(ctx, r, m.ConfigChangeID)
	}
	var removed []int32
	for id := range m.Removed {
		removed = append(removed, int32(id))
	}
	slices.Sort(removed)
	b.log.Info("reassignment complete", "topic", part.Topic(), "partition", part.Index(), "replicas", pm.Target)
	return b.ctl.CompleteReassignment(ctx, pm.ShardID, pm.Target, removed)
}
