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
	_, _, err := c.propose(ctx, &reassignCmd{Name: topic, Partition: partition, Target: target})
	return err
}

type reassignCmd struct {
	Name      string  `json:"name,omitempty"`
	Partition int32   `json:"partition,omitempty"`
	Target    []int32 `json:"replicas,omitempty"` // nil: cancel
}

func (*reassignCmd) op() string { return "reassign" }

func (cmd *reassignCmd) validate() error {
	if cmd.Target != nil && len(cmd.Target) == 0 {
		return fmt.Errorf("%w: no replicas", ErrInvalidReplicas)
	}
	return nil
}

func (cmd *reassignCmd) apply(md *Metadata) (*Metadata, sm.Result) {
	t, res, ok := md.partitionOf(cmd.Name, cmd.Partition)
	if !ok {
		return nil, res
	}
	pm := t.Partitions[cmd.Partition]
	if cmd.Target == nil {
		if pm.Target == nil {
			return nil, sm.Result{Value: resultNoReassignment}
		}
		pm.Target = slices.Clone(pm.Replicas) // converge back to where it was
		return withPartition(md, t, int(cmd.Partition), pm), sm.Result{}
	}
	seen := map[int32]bool{}
	for _, r := range cmd.Target {
		switch {
		case seen[r]:
			return nil, invalidReplicas("broker %d listed twice", r)
		case md.Brokers[r].RaftAddr == "":
			return nil, invalidReplicas("broker %d is not registered", r)
		case slices.Contains(pm.Former, r):
			return nil, invalidReplicas("broker %d left this partition's Raft group before and cannot rejoin it", r)
		}
		seen[r] = true
	}
	if pm.Target == nil && slices.Equal(cmd.Target, pm.Replicas) {
		return nil, sm.Result{}
	}
	pm.Target = slices.Clone(cmd.Target)
	return withPartition(md, t, int(cmd.Partition), pm), sm.Result{}
}

// CompleteReassignment records that the shard's Raft membership is now replicas, the target of its
// reassignment, and which brokers have ever been removed from it (a stale or repeated call changes
// nothing).
func (c *Controller) CompleteReassignment(ctx context.Context, shard uint64, replicas, removed []int32) error {
	_, _, err := c.propose(ctx, &reassignDoneCmd{Shards: []uint64{shard}, Replicas: replicas, Removed: removed})
	return err
}

type reassignDoneCmd struct {
	noChecks
	Shards   []uint64 `json:"shards,omitempty"` // one: the partition's
	Replicas []int32  `json:"replicas,omitempty"`
	Removed  []int32  `json:"removed,omitempty"`
}

func (*reassignDoneCmd) op() string { return "reassign_done" }

func (cmd *reassignDoneCmd) apply(md *Metadata) (*Metadata, sm.Result) {
	if len(cmd.Shards) != 1 {
		return nil, invalid("reassign_done needs one shard")
	}
	for _, t := range md.Topics {
		for i, pm := range t.Partitions {
			if pm.ShardID != cmd.Shards[0] {
				continue
			}
			if pm.Target == nil || !slices.Equal(pm.Target, cmd.Replicas) {
				return nil, sm.Result{}
			}
			for _, r := range append(slices.Clone(pm.Replicas), cmd.Removed...) {
				if !slices.Contains(cmd.Replicas, r) && !slices.Contains(pm.Former, r) {
					pm.Former = append(slices.Clone(pm.Former), r)
				}
			}
			for _, r := range cmd.Replicas {
				if !slices.Contains(pm.Replicas, r) && !slices.Contains(pm.Joined, r) {
					pm.Joined = append(slices.Clone(pm.Joined), r)
				}
			}
			pm.Replicas, pm.Target = slices.Clone(cmd.Replicas), nil
			return withPartition(md, t, i, pm), sm.Result{}
		}
	}
	return nil, sm.Result{}
}
