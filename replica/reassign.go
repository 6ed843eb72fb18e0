package replica

import (
	"context"

	"github.com/sluicebroker/sluice/quorum"
)

// Membership changes of a partition's Raft group, for reassignments. Every change takes the
// ConfigChangeID of the Membership it was decided on and fails if another change came first.

// Membership reads the partition's Raft membership through its leader.
func (p *Partition) Membership(ctx context.Context) (*quorum.Membership, error) {
	return p.host.Membership(ctx, p.shardID)
}

// AddLearner adds broker id as a non-voting member: it receives the log and catches up without
// counting toward the quorum.
func (p *Partition) AddLearner(ctx context.Context, id int32, raftAddr string, ccid uint64) error {
	return p.host.AddNonVotingReplica(ctx, p.shardID, uint64(id), raftAddr, ccid)
}

// Promote makes a caught-up learner a voter.
func (p *Partition) Promote(ctx context.Context, id int32, raftAddr string, ccid uint64) error {
	return p.host.AddReplica(ctx, p.shardID, uint64(id), raftAddr, ccid)
}

// RemoveMember removes broker id (voter or learner) from the group for good.
func (p *Partition) RemoveMember(ctx context.Context, id int32, ccid uint64) error {
	return p.host.RemoveReplica(ctx, p.shardID, uint64(id), ccid)
}
