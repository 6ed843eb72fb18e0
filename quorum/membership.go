package quorum

import (
	"context"
	"errors"
	"fmt"

	"github.com/lni/dragonboat/v4"
)

// Membership is a shard's Raft membership as this node has applied it.
type Membership struct {
	Voters    map[uint64]string // nodeID -> raft address
	NonVoting map[uint64]string // learners (e.g. a replica catching up before it votes)
	Removed   map[uint64]bool   // ids that left; dragonboat never lets them back in
	// ConfigChangeID is the index of the last applied membership change. Shards run with
	// dragonboat's OrderedConfigChange: every change method takes this value and is rejected
	// if another change happened since (an optimistic lock; read Membership again and retry).
	ConfigChangeID uint64
}

// Membership reads the shard's membership (linearizable: through the leader's read index).
func (h *Host) Membership(ctx context.Context, shardID uint64) (*Membership, error) {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	var m *dragonboat.Membership
	err := h.retryDropped(ctx, func() (err error) {
		m, err = h.nh.SyncGetShardMembership(ctx, shardID)
		return err
	})
	if err != nil {
		return nil, err
	}
	out := &Membership{Voters: m.Nodes, NonVoting: m.NonVotings, Removed: map[uint64]bool{}, ConfigChangeID: m.ConfigChangeID}
	for id := range m.Removed {
		out.Removed[id] = true
	}
	return out, nil
}

// AddReplica adds nodeID (at raftAddr) as a voter of the shard; that node then starts its replica
// with StartOnDiskShard(shardID, nil, true, ...). Call it on any current member.
func (h *Host) AddReplica(ctx context.Context, shardID, nodeID uint64, raftAddr string, configChangeID uint64) error {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	if err := h.retryDropped(ctx, func() error { return h.nh.SyncRequestAddReplica(ctx, shardID, nodeID, raftAddr, configChangeID) }); err != nil {
		return fmt.Errorf("quorum: add replica %d to shard %d: %w", nodeID, shardID, err)
	}
	return nil
}

// AddNonVotingReplica adds nodeID as a learner: it receives the log but does not vote (a new
// replica catching up, or a broker following the controller without being a voter).
func (h *Host) AddNonVotingReplica(ctx context.Context, shardID, nodeID uint64, raftAddr string, configChangeID uint64) error {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	if err := h.retryDropped(ctx, func() error { return h.nh.SyncRequestAddNonVoting(ctx, shardID, nodeID, raftAddr, configChangeID) }); err != nil {
		return fmt.Errorf("quorum: add non-voting replica %d to shard %d: %w", nodeID, shardID, err)
	}
	return nil
}

// RemoveReplica removes nodeID from the shard. The removed node should then StopShard and
// RemoveShardData; its id can never rejoin this shard.
func (h *Host) RemoveReplica(ctx context.Context, shardID, nodeID uint64, configChangeID uint64) error {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	if err := h.retryDropped(ctx, func() error { return h.nh.SyncRequestDeleteReplica(ctx, shardID, nodeID, configChangeID) }); err != nil {
		return fmt.Errorf("quorum: remove replica %d from shard %d: %w", nodeID, shardID, err)
	}
	return nil
}

// TransferLeader asks the shard's leader to hand leadership to nodeID (preferred leader
// election). It returns once the request is started; watch LeaderInfo for the outcome.
// Call it on the current leader.
func (h *Host) TransferLeader(shardID, nodeID uint64) error {
	return mapError(h.nh.RequestLeaderTransfer(shardID, nodeID))
}

// retryDropped runs a synchronous dragonboat request again while it is dropped for want of a
// leader (start-up, election, a leader not yet committed in its term): a dropped request was not
// applied, so repeating it is safe. Errors come back mapped.
func (h *Host) retryDropped(ctx context.Context, call func() error) error {
	for {
		err := mapError(call())
		if !errors.Is(err, ErrNotLeader) {
			return err
		}
		if werr := h.sleepTick(ctx); werr != nil {
			return werr
		}
	}
}

// withDefaultTimeout gives ctx a deadline (dragonboat's synchronous calls require one).
func withDefaultTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, defaultSyncTimeout)
}
