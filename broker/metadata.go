package broker

import (
	"context"
	"slices"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicebroker/sluice/quorum"
)

func init() {
	register(kmsg.Metadata, 0, 12, serveRequest((*Broker).handleMetadata)) // topic IDs are filled in; v13 only adds a top-level error code
	register(kmsg.DescribeCluster, 0, 1, serveRequest((*Broker).handleDescribeCluster))
}

// handleMetadata answers from this broker's replica of the controller state. Unknown topics are created
// with the broker defaults when the client allows it and auto-creation is on, as Kafka does.
func (b *Broker) handleMetadata(req *kmsg.MetadataRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.MetadataResponse)
	md := b.ctl.Metadata()

	var names []string
	if req.Topics == nil {
		for name := range md.Topics {
			names = append(names, name)
		}
		sort.Strings(names)
	} else {
		autoCreate := b.cfg.AutoCreateTopics && (req.Version < 4 || req.AllowAutoTopicCreation)
		created := false
		for _, t := range req.Topics {
			if t.Topic == nil {
				// Lookup by topic ID (v10+ with a null name).
				name, ok := topicNameByID(md, t.TopicID)
				if !ok {
					st := kmsg.NewMetadataResponseTopic()
					st.TopicID = t.TopicID
					st.ErrorCode = kerr.UnknownTopicID.Code
					resp.Topics = append(resp.Topics, st)
					continue
				}
				names = append(names, name)
				continue
			}
			name := *t.Topic
			names = append(names, name)
			if _, ok := md.Topics[name]; !ok && autoCreate && validTopicName(name) == nil && !justDeleted(md, name) {
				if err := b.createTopic(b.ctx, quorum.TopicSpec{
					Name:              name,
					Partitions:        b.cfg.DefaultPartitions,
					ReplicationFactor: b.cfg.DefaultReplicationFactor,
				}); err != nil && errorCode(err) != kerr.TopicAlreadyExists.Code {
					b.log.Warn("auto-creating topic failed", "topic", name, "err", err)
				}
				created = true
			}
		}
		if created {
			md = b.ctl.Metadata()
		}
	}

	resp.ClusterID = &md.ClusterID
	resp.ControllerID = b.agent.ControllerID()
	resp.Brokers = metadataBrokers(md)
	for _, name := range names {
		resp.Topics = append(resp.Topics, b.metadataTopic(md, name))
	}
	return resp
}

// deletedTopicAutoCreateDelay is how long after a topic's deletion a Metadata request does not
// auto-create it again. Kafka's auto-creation is asynchronous: the request that triggers it is answered
// without the topic, so a client that deletes a topic and reads its metadata at once (kafka-go's
// TestConn/test_delete_topics) sees it gone; Sluice creates before answering, and would bring it back.
// CreateTopics may recreate the name at once.
const deletedTopicAutoCreateDelay = 5 * time.Second

func justDeleted(md *quorum.Metadata, name string) bool {
	at, ok := md.Deleted[name]
	return ok && time.Since(time.UnixMilli(at)) < deletedTopicAutoCreateDelay
}

func metadataBrokers(md *quorum.Metadata) []kmsg.MetadataResponseBroker {
	ids := make([]int32, 0, len(md.Brokers))
	for id := range md.Brokers {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	out := make([]kmsg.MetadataResponseBroker, 0, len(ids))
	for _, id := range ids {
		bi := md.Brokers[id]
		mb := kmsg.NewMetadataResponseBroker()
		mb.NodeID, mb.Host, mb.Port = bi.NodeID, bi.Host, bi.Port
		if bi.Rack != "" {
			rack := bi.Rack
			mb.Rack = &rack
		}
		out = append(out, mb)
	}
	return out
}

func (b *Broker) metadataTopic(md *quorum.Metadata, name string) kmsg.MetadataResponseTopic {
	st := kmsg.NewMetadataResponseTopic()
	n := name
	st.Topic = &n
	t, ok := md.Topics[name]
	if !ok {
		if validTopicName(name) != nil {
			st.ErrorCode = kerr.InvalidTopicException.Code
		} else {
			st.ErrorCode = kerr.UnknownTopicOrPartition.Code
		}
		return st
	}
	st.TopicID = t.ID
	st.IsInternal = t.Internal
	st.Partitions = make([]kmsg.MetadataResponseTopicPartition, 0, len(t.Partitions))
	for _, p := range t.Partitions {
		sp := kmsg.NewMetadataResponseTopicPartition()
		sp.Partition = p.Partition
		if p.Target != nil { // moving: Kafka lists the old and the new replicas together
			p.Replicas = append(slices.Clone(p.Replicas), p.Target...)
			slices.Sort(p.Replicas)
			p.Replicas = slices.Compact(p.Replicas)
		}
		sp.Replicas = p.Replicas
		sp.Leader, sp.LeaderEpoch = b.agent.PartitionLeader(name, p)
		sp.ISR = b.agent.InSyncReplicas(name, p, sp.Leader)
		for _, r := range p.Replicas {
			if !b.ctl.Alive(r) {
				sp.OfflineReplicas = append(sp.OfflineReplicas, r)
			}
		}
		if sp.Leader < 0 {
			sp.ErrorCode = kerr.LeaderNotAvailable.Code
		}
		st.Partitions = append(st.Partitions, sp)
	}
	return st
}

func topicNameByID(md *quorum.Metadata, id [16]byte) (string, bool) {
	for name, t := range md.Topics {
		if t.ID == id {
			return name, true
		}
	}
	return "", false
}

func (b *Broker) handleDescribeCluster(req *kmsg.DescribeClusterRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.DescribeClusterResponse)
	md := b.ctl.Metadata()
	resp.ClusterID = md.ClusterID
	resp.ControllerID = b.agent.ControllerID()
	for _, mb := range metadataBrokers(md) {
		db := kmsg.NewDescribeClusterResponseBroker()
		db.NodeID, db.Host, db.Port, db.Rack = mb.NodeID, mb.Host, mb.Port, mb.Rack
		resp.Brokers = append(resp.Brokers, db)
	}
	return resp
}

// createTopic creates a topic through the controller and waits until this node's partitions of it run
// and have leaders, so a client that creates then produces does not bounce off LEADER_NOT_AVAILABLE.
func (b *Broker) createTopic(ctx context.Context, spec quorum.TopicSpec) error {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.TopicReadyTimeout)
	defer cancel()
	if err := b.proposeTopic(ctx, spec, 0); err != nil {
		return err
	}
	return b.waitTopicReady(ctx, spec.Name)
}

// proposeTopic admits the topic's partitions to the disk and to the open files limit (with pending
// more replicas admitted here and not open yet: earlier topics of the same request) and creates it
// through the controller, without waiting for its partitions.
func (b *Broker) proposeTopic(ctx context.Context, spec quorum.TopicSpec, pending int) error {
	local := b.localReplicas(int(spec.Partitions), int(spec.ReplicationFactor))
	if err := b.cfg.Disk.admitPartitions(local); err != nil {
		return err
	}
	if err := b.refuseLowDiskPlacement(spec.Assignment); err != nil {
		return err
	}
	if err := admitPartitionFiles(pending + local); err != nil {
		return err
	}
	_, err := b.ctl.CreateTopic(ctx, spec)
	return err
}

// waitCreated waits, within ctx, for a topic's partitions as createTopic does. For CreateTopics and
// CreatePartitions, which Kafka answers once the controller has committed the change: a wait cut short by
// the request's timeout is not an error (clients retry LEADER_NOT_AVAILABLE), other errors are.
func (b *Broker) waitCreated(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.TopicReadyTimeout)
	defer cancel()
	if err := b.waitTopicReady(ctx, name); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

// localReplicas estimates how many of partitions x rf replicas land on this broker (the controller
// spreads them evenly), rounded up: what the disk check before creating them counts.
// refuseLowDiskPlacement answers KAFKA_STORAGE_ERROR when new partition replicas would go to another
// broker whose disk is under its threshold: those named in assignment, or with the controller's
// own placement (which spreads over every broker), any registered broker.
func (b *Broker) refuseLowDiskPlacement(assignment [][]int32) error {
	if len(assignment) > 0 {
		for _, replicas := range assignment {
			for _, id := range replicas {
				if id != b.cfg.NodeID && b.ctl.DiskLow(id) {
					return &errReplicaDiskLow{broker: id}
				}
			}
		}
		return nil
	}
	for id := range b.ctl.Metadata().Brokers {
		if id != b.cfg.NodeID && b.ctl.DiskLow(id) {
			return &errReplicaDiskLow{broker: id}
		}
	}
	return nil
}

func (b *Broker) localReplicas(partitions, rf int) int {
	brokers := max(1, len(b.ctl.Metadata().Brokers))
	return (partitions*min(rf, brokers) + brokers - 1) / brokers
}

// waitTopicReady applies the latest metadata to the replica manager (idempotent; the background watcher
// does the same) and waits for every local partition of the topic to have a leader.
func (b *Broker) waitTopicReady(ctx context.Context, name string) error {
	for {
		md := b.ctl.Metadata()
		if err := b.replicas.Apply(md); err != nil {
			return err
		}
		t, ok := md.Topics[name]
		if !ok {
			return nil // deleted meanwhile
		}
		ready := true
		for _, p := range t.Partitions {
			if !containsInt32(p.Replicas, b.cfg.NodeID) {
				continue
			}
			part, ok := b.replicas.Partition(name, p.Partition)
			if !ok {
				ready = false
				break
			}
			if _, leader, _ := part.Leader(); leader < 0 {
				ready = false
				break
			}
		}
		if ready {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil // created; leaders still electing: clients retry on LEADER_NOT_AVAILABLE
		case <-b.ctl.Changed():
		case <-timeAfter(5):
		}
	}
}

func containsInt32(s []int32, v int32) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
