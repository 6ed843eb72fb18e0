package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicebroker/sluice/metrics"
	"github.com/sluicebroker/sluice/quorum"
)

func init() {
	register(kmsg.CreateTopics, 0, 7, serveRequest((*Broker).handleCreateTopics))
	register(kmsg.DeleteTopics, 0, 6, serveRequest((*Broker).handleDeleteTopics))
	register(kmsg.CreatePartitions, 0, 3, serveRequest((*Broker).handleCreatePartitions))
}

// maxTopicNameLen is Kafka's limit (249, so that partition directory names fit in 255 bytes).
const maxTopicNameLen = 249

// validTopicName applies Kafka's rules: 1..249 characters of [a-zA-Z0-9._-], not "." or "..".
func validTopicName(name string) error {
	switch {
	case name == "":
		return errors.New("topic name is empty")
	case name == "." || name == "..":
		return fmt.Errorf("topic name %q is not allowed", name)
	case len(name) > maxTopicNameLen:
		return fmt.Errorf("topic name is longer than %d characters", maxTopicNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("topic name %q has the illegal character %q (legal: a-z A-Z 0-9 . _ -)", name, c)
		}
	}
	return nil
}

func timeAfter(ms int) <-chan time.Time { return time.After(time.Duration(ms) * time.Millisecond) }

// requestContext bounds an admin request by its own timeout field (or a default) and the broker's life.
func (b *Broker) requestContext(timeoutMillis int32) (context.Context, context.CancelFunc) {
	d := time.Duration(timeoutMillis) * time.Millisecond
	if d <= 0 {
		d = 30 * time.Second
	}
	return context.WithTimeout(b.ctx, d)
}

func (b *Broker) handleCreateTopics(req *kmsg.CreateTopicsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.CreateTopicsResponse)
	ctx, cancel := b.requestContext(req.TimeoutMillis)
	defer cancel()
	seen := make(map[string]int, len(req.Topics))
	for _, t := range req.Topics {
		seen[t.Topic]++
	}
	brokers := int16(len(b.ctl.Metadata().Brokers))
	// Every topic is proposed first, then all are waited for: the request's timeout covers the
	// controller's commits, not one topic's partitions after another's.
	type created struct {
		resp  int // index in resp.Topics
		topic string
	}
	var waits []created
	pendingLocal := 0 // replicas of this request's topics created here, their files not open yet
	for _, t := range req.Topics {
		st := kmsg.NewCreateTopicsResponseTopic()
		st.Topic = t.Topic
		fail := func(code int16, msg string) {
			st.ErrorCode = code
			st.ErrorMessage = &msg
			st.NumPartitions, st.ReplicationFactor = -1, -1
			resp.Topics = append(resp.Topics, st)
		}
		if seen[t.Topic] > 1 {
			fail(kerr.InvalidRequest.Code, "topic appears more than once in the request")
			continue
		}
		if err := validTopicName(t.Topic); err != nil {
			fail(kerr.InvalidTopicException.Code, err.Error())
			continue
		}
		partitions, rf := t.NumPartitions, t.ReplicationFactor
		var assignment [][]int32
		if len(t.ReplicaAssignment) > 0 {
			if partitions != -1 || rf != -1 {
				fail(kerr.InvalidRequest.Code, "both the partition count or replication factor and a replica assignment were given; give one or the other")
				continue
			}
			var why string
			if assignment, why = createAssignment(b.ctl.Metadata(), t.ReplicaAssignment); why != "" {
				fail(kerr.InvalidReplicaAssignment.Code, why)
				continue
			}
			partitions, rf = int32(len(assignment)), int16(len(assignment[0]))
		}
		if partitions == -1 {
			partitions = b.cfg.DefaultPartitions
		}
		if rf == -1 {
			rf = b.cfg.DefaultReplicationFactor
		}
		if partitions <= 0 {
			fail(kerr.InvalidPartitions.Code, fmt.Sprintf("partition count %d must be positive", partitions))
			continue
		}
		if rf <= 0 || rf > brokers {
			fail(kerr.InvalidReplicationFactor.Code, fmt.Sprintf("replication factor %d must be between 1 and the broker count %d", rf, brokers))
			continue
		}
		configs := make(map[string]string, len(t.Configs))
		for _, c := range t.Configs {
			if c.Value == nil {
				continue
			}
			configs[c.Name] = *c.Value
		}
		if err := b.validateTopicConfigs(configs); err != nil {
			fail(kerr.InvalidConfig.Code, err.Error())
			continue
		}
		if _, ok := b.ctl.Metadata().Topics[t.Topic]; ok {
			fail(kerr.TopicAlreadyExists.Code, fmt.Sprintf("topic %q already exists", t.Topic))
			continue
		}
		if !req.ValidateOnly {
			if err := b.proposeTopic(ctx, quorum.TopicSpec{Name: t.Topic, Partitions: partitions, ReplicationFactor: rf, Configs: configs, Assignment: assignment}, pendingLocal); err != nil {
				fail(errorCode(err), err.Error())
				continue
			}
			pendingLocal += b.localReplicas(int(partitions), int(rf))
			if tm, ok := b.ctl.Metadata().Topics[t.Topic]; ok {
				st.TopicID = tm.ID
			}
			waits = append(waits, created{len(resp.Topics), t.Topic})
		}
		st.NumPartitions, st.ReplicationFactor = partitions, rf
		for _, e := range b.describeTopicConfigs(configs, nil, false) {
			c := kmsg.NewCreateTopicsResponseTopicConfig()
			c.Name, c.Value, c.ReadOnly, c.Source, c.IsSensitive = e.Name, e.Value, e.ReadOnly, int8(e.Source), e.IsSensitive
			st.Configs = append(st.Configs, c)
		}
		resp.Topics = append(resp.Topics, st)
	}
	for _, w := range waits {
		if err := b.waitCreated(ctx, w.topic); err != nil {
			st := &resp.Topics[w.resp]
			st.ErrorCode, st.ErrorMessage = errorCode(err), errorMessage(err)
		}
	}
	return resp
}

func (b *Broker) handleDeleteTopics(req *kmsg.DeleteTopicsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.DeleteTopicsResponse)
	ctx, cancel := b.requestContext(req.TimeoutMillis)
	defer cancel()
	type target struct {
		name *string
		id   [16]byte
	}
	var targets []target
	if req.Version >= 6 {
		for _, t := range req.Topics {
			targets = append(targets, target{t.Topic, t.TopicID})
		}
	} else {
		for _, name := range req.TopicNames {
			n := name
			targets = append(targets, target{name: &n})
		}
	}
	for _, t := range targets {
		st := kmsg.NewDeleteTopicsResponseTopic()
		st.Topic, st.TopicID = t.name, t.id
		md := b.ctl.Metadata()
		name := ""
		if t.name != nil {
			name = *t.name
		} else if n, ok := topicNameByID(md, t.id); ok {
			name = n
			st.Topic = &n
		}
		tm, ok := md.Topics[name]
		switch {
		case !ok && t.name == nil:
			st.ErrorCode = kerr.UnknownTopicID.Code
		case !ok:
			st.ErrorCode = kerr.UnknownTopicOrPartition.Code
		case tm.Internal:
			st.ErrorCode = kerr.InvalidRequest.Code
		default:
			st.TopicID = tm.ID
			if err := b.ctl.DeleteTopic(ctx, name); err != nil {
				st.ErrorCode = errorCode(err)
				st.ErrorMessage = errorMessage(err)
			} else {
				metrics.ForgetTopic(name)
				if err := b.replicas.Apply(b.ctl.Metadata()); err != nil {
					b.log.Warn("stopping partitions of a deleted topic", "topic", name, "err", err)
				}
			}
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp
}

// createAssignment turns CreateTopics' replica assignment into replica lists by partition, checked as
// Kafka does (every partition from 0 once, registered brokers, none twice, one replica count); why
// says what is wrong, or is "".
func createAssignment(md *quorum.Metadata, in []kmsg.CreateTopicsRequestTopicReplicaAssignment) ([][]int32, string) {
	out := make([][]int32, len(in))
	for _, a := range in {
		switch {
		case a.Partition < 0 || int(a.Partition) >= len(in):
			return nil, fmt.Sprintf("partitions must be numbered 0 to %d; got %d", len(in)-1, a.Partition)
		case out[a.Partition] != nil:
			return nil, fmt.Sprintf("partition %d is assigned twice", a.Partition)
		}
		out[a.Partition] = a.Replicas
		if a.Replicas == nil {
			out[a.Partition] = []int32{}
		}
	}
	if why := md.CheckAssignment(out, len(out[0])); why != "" {
		return nil, why
	}
	return out, ""
}

// replicationFactor is the replica count of a topic's first partition (1 for none).
func replicationFactor(tm *quorum.TopicMeta) int {
	if len(tm.Partitions) == 0 {
		return 1
	}
	return len(tm.Partitions[0].Replicas)
}

// newAssignment is CreatePartitions' assignment of the new partitions as replica lists.
func newAssignment(in []kmsg.CreatePartitionsRequestTopicAssignment) [][]int32 {
	out := make([][]int32, len(in))
	for i, a := range in {
		out[i] = a.Replicas
	}
	return out
}

func (b *Broker) handleCreatePartitions(req *kmsg.CreatePartitionsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.CreatePartitionsResponse)
	ctx, cancel := b.requestContext(req.TimeoutMillis)
	defer cancel()
	waits := map[int]string{} // resp.Topics index -> topic grown: waited for after all are proposed
	for _, t := range req.Topics {
		st := kmsg.NewCreatePartitionsResponseTopic()
		st.Topic = t.Topic
		fail := func(code int16, msg string) {
			st.ErrorCode = code
			st.ErrorMessage = &msg
		}
		tm, ok := b.ctl.Metadata().Topics[t.Topic]
		switch {
		case !ok:
			fail(kerr.UnknownTopicOrPartition.Code, fmt.Sprintf("topic %q does not exist", t.Topic))
		case int(t.Count) <= len(tm.Partitions):
			fail(kerr.InvalidPartitions.Code, fmt.Sprintf("topic %q has %d partitions; the new count %d must be larger", t.Topic, len(tm.Partitions), t.Count))
		case t.Assignment != nil && len(t.Assignment) != int(t.Count)-len(tm.Partitions):
			fail(kerr.InvalidReplicaAssignment.Code, fmt.Sprintf("%d replica lists for %d new partitions", len(t.Assignment), int(t.Count)-len(tm.Partitions)))
		case t.Assignment != nil && b.ctl.Metadata().CheckAssignment(newAssignment(t.Assignment), replicationFactor(tm)) != "":
			fail(kerr.InvalidReplicaAssignment.Code, b.ctl.Metadata().CheckAssignment(newAssignment(t.Assignment), replicationFactor(tm)))
		case req.ValidateOnly:
		default:
			var assignment [][]int32
			if t.Assignment != nil {
				assignment = newAssignment(t.Assignment)
			}
			local := b.localReplicas(int(t.Count)-len(tm.Partitions), replicationFactor(tm))
			if err := b.cfg.Disk.admitPartitions(local); err != nil {
				fail(errorCode(err), err.Error())
			} else if err := b.refuseLowDiskPlacement(assignment); err != nil {
				fail(errorCode(err), err.Error())
			} else if err := admitPartitionFiles(local); err != nil {
				fail(errorCode(err), err.Error())
			} else if err := b.ctl.CreatePartitions(ctx, t.Topic, t.Count, assignment); err != nil {
				fail(errorCode(err), err.Error())
			} else {
				waits[len(resp.Topics)] = t.Topic
			}
		}
		resp.Topics = append(resp.Topics, st)
	}
	for i, topic := range waits {
		if err := b.waitCreated(ctx, topic); err != nil {
			resp.Topics[i].ErrorCode, resp.Topics[i].ErrorMessage = errorCode(err), errorMessage(err)
		}
	}
	return resp
}
