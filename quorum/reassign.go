package quorum

import (
	"context"
	"fmt"
	"slices"

	sm "github.com/lni/dragonboat/v4/statemachine"
)

// Partition reassignment (Kafka's AlterPartitionReassignments): the controller records the target
// replica set; the partition's leader then changes its Raft membership one step at a time (add the
// new replicas as non-voting, promote them once caught up, remove the old ones) and calls
// CompleteReassignment, which makes the target the partition's replicas.

// Reassign sets the replicas partition of topic moves to. target nil cancels a reassignment in
// progress: the partition moves back to its current replicas.
func (c *Controller) Reassign(ctx context.Context, topic string, partition int32, target []int32) error {
	if target != nil && len(target) == 0 {
		return fmt.Errorf("%w: no replicas", ErrInvalidReplicas)
	}
	_, _, err := c.propose(ctx, command{Op: opReassign, Name: topic, Partition: partition, Replicas: target})
	return err
}

// CompleteReassignment records that the shard's Raft membership is now replicas, the target of its
// reassignment, and which brokers have ever been removed from it (a stale or repeated call changes
// nothing).
func (c *Controller) CompleteReassignment(ctx context.Context, shard uint64, replicas, removed []int32) error {
	_, _, err := c.propose(ctx, command{Op: opReassignDone, Shards: []uint64{shard}, Replicas: replicas, Removed: removed})
	return err
}

// withPartition returns md with partition i of topic t replaced by pm (copy on write).
func withPartition(md *Metadata, t *TopicMeta, i int, pm PartitionMeta) *Metadata {
	next := *md
	next.Topics = copyTopics(md.Topics, 0)
	tm := *t
	tm.Partitions = slices.Clone(t.Partitions)
	tm.Partitions[i] = pm
	next.Topics[t.Name] = &tm
	return &next
}

func applyReassign(md *Metadata, topic string, partition int32, target []int32) (*Metadata, sm.Result) {
	t, ok := md.Topics[topic]
	if !ok {
		return nil, sm.Result{Value: resultUnknownTopic}
	}
	if partition < 0 || int(partition) >= len(t.Partitions) {
		return nil, sm.Result{Value: resultUnknownPartition}
	}
	pm := t.Partitions[partition]
	if target == nil {
		if pm.Target == nil {
			return nil, sm.Result{Value: resultNoReassignment}
		}
		pm.Target = slices.Clone(pm.Replicas) // converge back to where it was
		return withPartition(md, t, int(partition), pm), sm.Result{}
	}
	seen := map[int32]bool{}
	for _, r := range target {
		switch {
		case seen[r]:
			return nil, sm.Result{Value: resultInvalidReplicas, Data: fmt.Appendf(nil, "broker %d listed twice", r)}
		case md.Brokers[r].RaftAddr == "":
			return nil, sm.Result{Value: resultInvalidReplicas, Data: fmt.Appendf(nil, "broker %d is not registered", r)}
		case slices.Contains(pm.Former, r):
			return nil, sm.Result{Value: resultInvalidReplicas, Data: fmt.Appendf(nil, "broker %d left this partition's Raft group before and cannot rejoin it", r)}
		}
		seen[r] = true
	}
	if pm.Target == nil && slices.Equal(target, pm.Replicas) {
		return nil, sm.Result{}
	}
	pm.Target = slices.Clone(target)
	return withPartition(md, t, int(partition), pm), sm.Result{}
}

func applyReassignDone(md *Metadata, shard uint64, replicas, removed []int32) *Metadata {
	for _, t := range md.Topics {
		for i, pm := range t.Partitions {
			if pm.ShardID != shard {
				continue
			}
			if pm.Target == nil || !slices.Equal(pm.Target, replicas) {
				return nil
			}
			for _, r := range append(slices.Clone(pm.Replicas), removed...) {
				if !slices.Contains(replicas, r) && !slices.Contains(pm.Former, r) {
					pm.Former = append(slices.Clone(pm.Former), r)
				}
			}
			for _, r := range replicas {
				if !slices.Contains(pm.Replicas, r) && !slices.Contains(pm.Joined, r) {
					pm.Joined = append(slices.Clone(pm.Joined), r)
				}
			}
			pm.Replicas, pm.Target = slices.Clone(replicas), nil
			return withPartition(md, t, i, pm)
		}
	}
	return nil
}
