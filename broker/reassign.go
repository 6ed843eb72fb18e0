package broker

import (
	"slices"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicebroker/sluice/quorum"
)

func init() {
	register(kmsg.AlterPartitionAssignments, 0, 0, serveRequest((*Broker).handleAlterPartitionAssignments)) // v1 only adds AllowReplicationFactorChange
	register(kmsg.ListPartitionReassignments, 0, 0, serveRequest((*Broker).handleListPartitionReassignments))
}

// Partition reassignment: AlterPartitionAssignments records a target replica set in the controller;
// the partition's leader moves its Raft membership there one step at a time (the cluster agent's
// reassignStep), so a step interrupted by a crash or a leader change is taken again by whoever leads
// next.

func (b *Broker) handleAlterPartitionAssignments(req *kmsg.AlterPartitionAssignmentsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.AlterPartitionAssignmentsResponse)
	ctx, cancel := b.requestContext(req.TimeoutMillis)
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
