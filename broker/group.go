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
	"github.com/sluicebroker/sluice/netio"
	"github.com/sluicebroker/sluice/quorum"
)

func init() {
	// The group APIs from v0 (kafka-go sends v0).
	register(kmsg.OffsetCommit, 0, 9, func(b *Broker, c *call) kmsg.Response { // v10 uses topic IDs
		c.turn.wait(b.ctx)
		defer c.turn.done()
		return b.handleOffsetCommit(c.req.(*kmsg.OffsetCommitRequest))
	})
	register(kmsg.OffsetFetch, 0, 9, serveRequest((*Broker).handleOffsetFetch))         // v10 uses topic IDs
	register(kmsg.FindCoordinator, 0, 4, serveRequest((*Broker).handleFindCoordinator)) // v5/v6 are for transactions and share groups
	register(kmsg.JoinGroup, 0, 9, func(b *Broker, c *call) kmsg.Response {
		return b.handleJoinGroup(c, c.req.(*kmsg.JoinGroupRequest))
	})
	register(kmsg.Heartbeat, 0, 4, serveRequest((*Broker).handleHeartbeat))
	register(kmsg.LeaveGroup, 0, 5, serveRequest((*Broker).handleLeaveGroup))
	register(kmsg.SyncGroup, 0, 5, serveRequest((*Broker).handleSyncGroup))
	register(kmsg.DescribeGroups, 0, 5, serveRequest((*Broker).handleDescribeGroups))
	register(kmsg.ListGroups, 0, 4, serveRequest((*Broker).handleListGroups))
	register(kmsg.DeleteGroups, 0, 2, serveRequest((*Broker).handleDeleteGroups))
	register(kmsg.OffsetDelete, 0, 0, serveRequest((*Broker).handleOffsetDelete))
}

// The group coordinator of a group is the leader of its __consumer_offsets partition (internal.go:
// creation, loading). The broker hands group requests to the group package.

const (
	offsetsTopic      = "__consumer_offsets"
	offsetsPartitions = 3
)

// groupState is the broker's side of the group coordinator.
type groupState struct {
	once  sync.Once
	coord *group.Coordinator
	topic internalTopic // __consumer_offsets
}

func (b *Broker) coordinator() *group.Coordinator {
	b.groups.once.Do(func() {
		b.groups.coord = group.New(group.Config{OffsetsRetention: b.cfg.OffsetsRetention,
			MinSessionTimeout: b.cfg.GroupMinSessionTimeout, MaxSessionTimeout: b.cfg.GroupMaxSessionTimeout,
			InitialRebalanceDelay: b.cfg.GroupInitialRebalanceDelay}, offsetsStore{b})
		b.closeOnShutdown(b.groups.coord.Close)
	})
	return b.groups.coord
}

// offsetsStore appends the coordinator's records to the group's partition through Raft.
type offsetsStore struct{ b *Broker }

func (s offsetsStore) Append(ctx context.Context, groupID string, recs []group.Record) error {
	return s.b.appendInternal(ctx, offsetsTopic, groupID, batch.Encode(recs, time.Now().UnixMilli(), 0, batch.NoProducer))
}

// AppendTxn writes a group's transactional offsets as a transactional batch of the producer.
func (s offsetsStore) AppendTxn(ctx context.Context, groupID string, pid int64, epoch int16, recs []group.Record) error {
	err := s.b.appendInternal(ctx, offsetsTopic, groupID, batch.Encode(recs, time.Now().UnixMilli(),
		batch.AttrTransactional, batch.Producer{ID: pid, Epoch: epoch, BaseSequence: -1}))
	if errors.Is(err, kerr.InvalidProducerEpoch) {
		return kerr.ProducerFenced
	}
	return err
}

// groupReady checks this node coordinates groupID and its partition is loaded: 0, or the error code
// to answer (NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE, COORDINATOR_LOAD_IN_PROGRESS).
func (b *Broker) groupReady(ctx context.Context, groupID string) int16 {
	if groupID == "" {
		return kerr.InvalidGroupID.Code
	}
	return b.coordinatorReady(ctx, &b.groups.topic, b.coordinator(), groupID)
}

func (b *Broker) handleFindCoordinator(req *kmsg.FindCoordinatorRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.FindCoordinatorResponse)
	find := func(key string) (quorum.BrokerInfo, int16) {
		switch req.CoordinatorType {
		case 0:
			return b.coordinatorNode(b.ctx, &b.groups.topic, key)
		case 1:
			return b.coordinatorNode(b.ctx, &b.txns.topic, key)
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

// commitOrder makes a connection's OffsetCommits apply one after another in the order they arrived:
// requests run on their own goroutines, and a client that pipelines commits of one partition
// (librdkafka's async commits) expects the last one sent to be the one that stays.
type commitOrder struct {
	mu   sync.Mutex
	last map[*netio.Conn]*commitTurn // the connection's latest commit not yet done
}

// commitTurn is one OffsetCommit's place in its connection's line.
type commitTurn struct {
	o      *commitOrder
	conn   *netio.Conn
	prev   chan struct{} // closed when the commit before this one is done (nil: none)
	finish chan struct{}
}

// take queues a commit of conn; called on the connection's event loop, in arrival order.
func (o *commitOrder) take(conn *netio.Conn) *commitTurn {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.last == nil {
		o.last = map[*netio.Conn]*commitTurn{}
	}
	t := &commitTurn{o: o, conn: conn, finish: make(chan struct{})}
	if prev := o.last[conn]; prev != nil {
		t.prev = prev.finish
	}
	o.last[conn] = t
	return t
}

// wait blocks until the connection's previous commit is done (or the broker closes).
func (t *commitTurn) wait(ctx context.Context) {
	if t == nil || t.prev == nil {
		return
	}
	select {
	case <-t.prev:
	case <-ctx.Done():
	}
}

// done lets the next commit go and forgets the connection when no other commit is queued.
func (t *commitTurn) done() {
	if t == nil {
		return
	}
	t.o.mu.Lock()
	if t.o.last[t.conn] == t {
		delete(t.o.last, t.conn)
	}
	t.o.mu.Unlock()
	close(t.finish)
}

// handleOffsetCommit answers partitions of unknown topics UNKNOWN_TOPIC_OR_PARTITION, as Kafka does,
// and hands the rest to the coordinator.
func (b *Broker) handleOffsetCommit(req *kmsg.OffsetCommitRequest) kmsg.Response {
	md := b.ctl.Metadata()
	exists := func(topic string, p int32) bool {
		tm := md.Topics[topic]
		return tm != nil && p >= 0 && int(p) < len(tm.Partitions)
	}
	var known []kmsg.OffsetCommitRequestTopic
	all := true
	for _, t := range req.Topics {
		kt := t
		kt.Partitions = nil
		for _, p := range t.Partitions {
			if exists(t.Topic, p.Partition) {
				kt.Partitions = append(kt.Partitions, p)
			} else {
				all = false
			}
		}
		if len(kt.Partitions) > 0 {
			known = append(known, kt)
		}
	}
	if all {
		return b.commitOffsets(req)
	}
	codes := map[string]map[int32]int16{}
	if len(known) > 0 {
		filtered := *req
		filtered.Topics = known
		for _, t := range b.commitOffsets(&filtered).(*kmsg.OffsetCommitResponse).Topics {
			codes[t.Topic] = map[int32]int16{}
			for _, p := range t.Partitions {
				codes[t.Topic][p.Partition] = p.ErrorCode
			}
		}
	}
	// One answer in the request's shape: a topic with known and unknown partitions appears once.
	return group.AnswerOffsetCommit(req, func(topic string, p kmsg.OffsetCommitRequestTopicPartition) int16 {
		if !exists(topic, p.Partition) {
			return kerr.UnknownTopicOrPartition.Code
		}
		return codes[topic][p.Partition]
	})
}

func (b *Broker) commitOffsets(req *kmsg.OffsetCommitRequest) kmsg.Response {
	if code := b.groupReady(b.ctx, req.Group); code != 0 {
		return group.AnswerOffsetCommit(req, func(string, kmsg.OffsetCommitRequestTopicPartition) int16 { return code })
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
	t, ok := b.internalTopicMeta(ctx, &b.groups.topic, false)
	if !ok {
		return
	}
	for p := range int32(len(t.Partitions)) {
		b.loadInternalPartition(ctx, &b.groups.topic, b.coordinator(), p, int32(len(t.Partitions)))
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
