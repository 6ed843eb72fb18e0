package broker

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicebroker/sluice/batch"
	"github.com/sluicebroker/sluice/group"
	"github.com/sluicebroker/sluice/quorum"
	"github.com/sluicebroker/sluice/replica"
)

// The group coordinator of a group is the leader of its __consumer_offsets partition. The broker
// creates that topic on first use, loads a partition's groups (reading it from the start) the first
// time this node serves a group of it as leader, and hands group requests to the group package.

const (
	offsetsTopic      = "__consumer_offsets"
	offsetsPartitions = 3
	offsetsTimeout    = 10 * time.Second
)

// groupState is the broker's side of the coordinator: which __consumer_offsets partitions are loaded.
type groupState struct {
	once   sync.Once
	coord  *group.Coordinator
	mu     sync.Mutex      // serialises loads
	loaded map[int32]int32 // partition -> leader epoch it was loaded at
}

func (b *Broker) coordinator() *group.Coordinator {
	b.groups.once.Do(func() {
		b.groups.loaded = map[int32]int32{}
		b.groups.coord = group.New(group.Config{OffsetsRetention: b.cfg.OffsetsRetention}, offsetsStore{b})
		go func() {
			<-b.ctx.Done()
			b.groups.coord.Close()
		}()
	})
	return b.groups.coord
}

// offsetsStore appends the coordinator's records to the group's partition through Raft.
type offsetsStore struct{ b *Broker }

func (s offsetsStore) Append(ctx context.Context, groupID string, recs []group.Record) error {
	return s.b.appendInternal(ctx, offsetsTopic, func(n int32) int32 { return batch.PartitionFor(groupID, n) },
		batch.Encode(recs, time.Now().UnixMilli(), 0, batch.NoProducer))
}

// coordinatorError maps a partition error to what a group client expects.
func coordinatorError(err error) error {
	if err == nil {
		return nil
	}
	switch c := errorCode(err); c {
	case kerr.NotLeaderForPartition.Code, kerr.UnknownTopicOrPartition.Code:
		return kerr.NotCoordinator
	case kerr.RequestTimedOut.Code:
		return kerr.RequestTimedOut
	default:
		return kerr.ErrorForCode(c)
	}
}

// groupReady checks this node coordinates groupID and its partition is loaded: 0, or the error code
// to answer (NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE, COORDINATOR_LOAD_IN_PROGRESS).
func (b *Broker) groupReady(ctx context.Context, groupID string) int16 {
	if groupID == "" {
		return kerr.InvalidGroupID.Code
	}
	t, ok := b.offsetsTopicMeta(ctx, true)
	if !ok {
		return kerr.CoordinatorNotAvailable.Code
	}
	return b.loadPartition(ctx, batch.PartitionFor(groupID, int32(len(t.Partitions))), int32(len(t.Partitions)))
}

// loadPartition makes sure this node leads partition p of __consumer_offsets and has replayed it.
func (b *Broker) loadPartition(ctx context.Context, p, n int32) int16 {
	c := b.coordinator()
	if pm, ok := b.partitionMeta(offsetsTopic, p); ok && !containsInt32(pm.Replicas, b.cfg.NodeID) {
		return kerr.NotCoordinator.Code // hosted elsewhere: the client asks FindCoordinator again
	}
	part, ok := b.internalPartitionLed(ctx, offsetsTopic, p)
	if !ok {
		return kerr.CoordinatorNotAvailable.Code
	}
	isLeader, _, epoch := part.Leader()
	if !isLeader {
		b.groups.mu.Lock()
		if _, ok := b.groups.loaded[p]; ok {
			delete(b.groups.loaded, p)
			c.Unload(func(g string) bool { return batch.PartitionFor(g, n) == p })
		}
		b.groups.mu.Unlock()
		return kerr.NotCoordinator.Code
	}
	b.groups.mu.Lock()
	defer b.groups.mu.Unlock()
	if e, ok := b.groups.loaded[p]; ok && e == epoch {
		return 0
	}
	c.Unload(func(g string) bool { return batch.PartitionFor(g, n) == p })
	if err := b.replayOffsets(ctx, c, part); err != nil {
		b.log.Warn("loading __consumer_offsets failed", "partition", p, "err", err)
		return kerr.CoordinatorLoadInProgress.Code
	}
	b.groups.loaded[p] = epoch
	return 0
}

// leaderWait bounds how long a group request waits for its partition's leader.
const leaderWait = 5 * time.Second

// replayOffsets writes an empty marker record through Raft, so that everything committed before it is
// applied, then replays the partition from its start up to the marker.
func (b *Broker) replayOffsets(ctx context.Context, c *group.Coordinator, part *replica.Partition) error {
	n, p := int32(offsetsPartitions), part.Index()
	if t, ok := b.ctl.Metadata().Topics[offsetsTopic]; ok {
		n = int32(len(t.Partitions))
	}
	inPartition := func(g string) bool { return batch.PartitionFor(g, n) == p }
	ctx, cancel := context.WithTimeout(ctx, offsetsTimeout)
	defer cancel()
	res, err := part.Produce(ctx, batch.Encode([]batch.Record{{}}, time.Now().UnixMilli(), 0, batch.NoProducer))
	if err != nil {
		return err
	}
	off := part.LogStartOffset()
	for off < res.BaseOffset {
		r, err := part.Read(off, 1<<20)
		if err != nil {
			return err
		}
		buf, err := r.AppendTo(nil)
		r.Release()
		if err != nil {
			return err
		}
		next, err := c.ReplayBatches(buf, inPartition)
		if err != nil {
			return err
		}
		if next <= off {
			return errors.New("no progress reading __consumer_offsets")
		}
		off = next
	}
	return nil
}

func (b *Broker) handleFindCoordinator(req *kmsg.FindCoordinatorRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.FindCoordinatorResponse)
	find := func(key string) (quorum.BrokerInfo, int16) {
		switch req.CoordinatorType {
		case 0:
			return b.coordinatorFor(b.ctx, key)
		case 1:
			return b.txnCoordinatorFor(b.ctx, key)
		}
		return quorum.BrokerInfo{}, kerr.InvalidRequest.Code
	}
	if req.Version < 4 {
		bi, code := find(req.CoordinatorKey)
		resp.ErrorCode, resp.NodeID, resp.Host, resp.Port = code, -1, "", -1
		if code == 0 {
			resp.NodeID, resp.Host, resp.Port = bi.NodeID, bi.Host, bi.Port
		}
		return resp
	}
	for _, key := range req.CoordinatorKeys {
		rc := kmsg.NewFindCoordinatorResponseCoordinator()
		rc.Key = key
		bi, code := find(key)
		rc.ErrorCode, rc.NodeID, rc.Host, rc.Port = code, -1, "", -1
		if code == 0 {
			rc.NodeID, rc.Host, rc.Port = bi.NodeID, bi.Host, bi.Port
		}
		resp.Coordinators = append(resp.Coordinators, rc)
	}
	return resp
}

func (b *Broker) handleJoinGroup(c *call, req *kmsg.JoinGroupRequest) kmsg.Response {
	if code := b.groupReady(b.ctx, req.Group); code != 0 {
		resp := req.ResponseKind().(*kmsg.JoinGroupResponse)
		resp.ErrorCode, resp.Generation = code, -1
		return resp
	}
	host := ""
	if a := c.nr.Conn.RemoteAddr; a != nil {
		host = "/" + a.String()
	}
	return b.coordinator().JoinGroup(b.ctx, req, c.hdr.clientID, host)
}

func (b *Broker) handleSyncGroup(req *kmsg.SyncGroupRequest) kmsg.Response {
	if code := b.groupReady(b.ctx, req.Group); code != 0 {
		resp := req.ResponseKind().(*kmsg.SyncGroupResponse)
		resp.ErrorCode = code
		return resp
	}
	return b.coordinator().SyncGroup(b.ctx, req)
}

func (b *Broker) handleHeartbeat(req *kmsg.HeartbeatRequest) kmsg.Response {
	if code := b.groupReady(b.ctx, req.Group); code != 0 {
		resp := req.ResponseKind().(*kmsg.HeartbeatResponse)
		resp.ErrorCode = code
		return resp
	}
	return b.coordinator().Heartbeat(req)
}

func (b *Broker) handleLeaveGroup(req *kmsg.LeaveGroupRequest) kmsg.Response {
	if code := b.groupReady(b.ctx, req.Group); code != 0 {
		resp := req.ResponseKind().(*kmsg.LeaveGroupResponse)
		resp.ErrorCode = code
		return resp
	}
	return b.coordinator().LeaveGroup(req)
}

func (b *Broker) handleOffsetCommit(req *kmsg.OffsetCommitRequest) kmsg.Response {
	if code := b.groupReady(b.ctx, req.Group); code != 0 {
		resp := req.ResponseKind().(*kmsg.OffsetCommitResponse)
		for _, t := range req.Topics {
			rt := kmsg.NewOffsetCommitResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewOffsetCommitResponseTopicPartition()
				rp.Partition, rp.ErrorCode = p.Partition, code
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		return resp
	}
	return b.coordinator().OffsetCommit(b.ctx, req)
}

func (b *Broker) handleOffsetFetch(req *kmsg.OffsetFetchRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.OffsetFetchResponse)
	if req.Version < 8 {
		if code := b.groupReady(b.ctx, req.Group); code != 0 {
			resp.ErrorCode = code
			if req.Version < 2 {
				// No top-level error before v2: put it on every partition.
				for _, t := range req.Topics {
					rt := kmsg.NewOffsetFetchResponseTopic()
					rt.Topic = t.Topic
					for _, p := range t.Partitions {
						rp := kmsg.NewOffsetFetchResponseTopicPartition()
						rp.Partition, rp.Offset, rp.ErrorCode = p, -1, code
						rt.Partitions = append(rt.Partitions, rp)
					}
					resp.Topics = append(resp.Topics, rt)
				}
			}
			return resp
		}
		resp.Topics = b.coordinator().OffsetFetch(req.Group, req.Topics)
		if req.RequireStable {
			for i := range resp.Topics {
				for j := range resp.Topics[i].Partitions {
					rp := &resp.Topics[i].Partitions[j]
					b.markUnstable(req.Group, resp.Topics[i].Topic, rp.Partition, &rp.ErrorCode)
				}
			}
		}
		return resp
	}
	for _, rg := range req.Groups {
		g := kmsg.NewOffsetFetchResponseGroup()
		g.Group = rg.Group
		if code := b.groupReady(b.ctx, rg.Group); code != 0 {
			g.ErrorCode = code
			resp.Groups = append(resp.Groups, g)
			continue
		}
		var topics []kmsg.OffsetFetchRequestTopic
		if rg.Topics != nil {
			topics = []kmsg.OffsetFetchRequestTopic{}
			for _, t := range rg.Topics {
				rt := kmsg.NewOffsetFetchRequestTopic()
				rt.Topic, rt.Partitions = t.Topic, t.Partitions
				topics = append(topics, rt)
			}
		}
		for _, t := range b.coordinator().OffsetFetch(rg.Group, topics) {
			gt := kmsg.NewOffsetFetchResponseGroupTopic()
			gt.Topic = t.Topic
			for _, p := range t.Partitions {
				gp := kmsg.NewOffsetFetchResponseGroupTopicPartition()
				gp.Partition, gp.Offset, gp.LeaderEpoch, gp.Metadata, gp.ErrorCode = p.Partition, p.Offset, p.LeaderEpoch, p.Metadata, p.ErrorCode
				if req.RequireStable {
					b.markUnstable(rg.Group, t.Topic, gp.Partition, &gp.ErrorCode)
				}
				gt.Partitions = append(gt.Partitions, gp)
			}
			g.Topics = append(g.Topics, gt)
		}
		resp.Groups = append(resp.Groups, g)
	}
	return resp
}

// loadAll loads every __consumer_offsets partition this node leads (for ListGroups).
func (b *Broker) loadAll(ctx context.Context) {
	t, ok := b.offsetsTopicMeta(ctx, false)
	if !ok {
		return
	}
	for p := range int32(len(t.Partitions)) {
		b.loadPartition(ctx, p, int32(len(t.Partitions)))
	}
}

func (b *Broker) handleListGroups(req *kmsg.ListGroupsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.ListGroupsResponse)
	b.loadAll(b.ctx)
	for _, t := range req.TypesFilter {
		if t == "classic" || t == "Classic" {
			req.TypesFilter = nil
			break
		}
	}
	if len(req.TypesFilter) > 0 {
		return resp // only classic groups exist
	}
	resp.Groups = b.coordinator().ListGroups(req.StatesFilter)
	if resp.Groups == nil {
		resp.Groups = []kmsg.ListGroupsResponseGroup{}
	}
	return resp
}

func (b *Broker) handleDescribeGroups(req *kmsg.DescribeGroupsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.DescribeGroupsResponse)
	for _, id := range req.Groups {
		if code := b.groupReady(b.ctx, id); code != 0 {
			dg := kmsg.NewDescribeGroupsResponseGroup()
			dg.Group, dg.ErrorCode = id, code
			resp.Groups = append(resp.Groups, dg)
			continue
		}
		dg := b.coordinator().DescribeGroup(id)
		if req.IncludeAuthorizedOperations {
			dg.AuthorizedOperations = 0
		}
		resp.Groups = append(resp.Groups, dg)
	}
	return resp
}

func (b *Broker) handleDeleteGroups(req *kmsg.DeleteGroupsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.DeleteGroupsResponse)
	for _, id := range req.Groups {
		dg := kmsg.NewDeleteGroupsResponseGroup()
		dg.Group = id
		if dg.ErrorCode = b.groupReady(b.ctx, id); dg.ErrorCode == 0 {
			dg.ErrorCode = b.coordinator().DeleteGroup(b.ctx, id)
		}
		resp.Groups = append(resp.Groups, dg)
	}
	return resp
}

func (b *Broker) handleOffsetDelete(req *kmsg.OffsetDeleteRequest) kmsg.Response {
	if code := b.groupReady(b.ctx, req.Group); code != 0 {
		resp := req.ResponseKind().(*kmsg.OffsetDeleteResponse)
		resp.ErrorCode = code
		return resp
	}
	return b.coordinator().OffsetDelete(b.ctx, req)
}
