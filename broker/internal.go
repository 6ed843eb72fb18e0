package broker

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/sluicebroker/sluice/batch"
	"github.com/sluicebroker/sluice/quorum"
	"github.com/sluicebroker/sluice/replica"
)

// The coordinators' internal topics, __consumer_offsets (groups) and __transaction_state
// (transactions): created on first use, compacted, replicated on up to three brokers; a key's
// coordinator is the leader of its partition.

// offsetsTopicMeta returns __consumer_offsets' metadata, creating the topic when create is set.
func (b *Broker) offsetsTopicMeta(ctx context.Context, create bool) (*quorum.TopicMeta, bool) {
	return b.internalTopicMeta(ctx, offsetsTopic, offsetsPartitions, create)
}

// txnTopicMeta returns __transaction_state's metadata, creating the topic when create is set.
func (b *Broker) txnTopicMeta(ctx context.Context, create bool) (*quorum.TopicMeta, bool) {
	return b.internalTopicMeta(ctx, txnTopic, txnPartitions, create)
}

func (b *Broker) internalTopicMeta(ctx context.Context, name string, partitions int32, create bool) (*quorum.TopicMeta, bool) {
	md := b.ctl.Metadata()
	if t, ok := md.Topics[name]; ok || !create {
		return t, ok
	}
	rf := int16(max(min(len(md.Brokers), 3), 1))
	// cleanup.policy=compact as in Kafka: until compaction exists, a compacted topic keeps everything,
	// so time or size retention never deletes a group's last commit or a transaction's state.
	err := b.createTopic(ctx, quorum.TopicSpec{Name: name, Partitions: partitions, ReplicationFactor: rf,
		Internal: true, Configs: map[string]string{"cleanup.policy": "compact"}})
	if err != nil && errorCode(err) != kerr.TopicAlreadyExists.Code {
		b.log.Warn("creating an internal topic failed", "topic", name, "err", err)
	}
	t, ok := b.ctl.Metadata().Topics[name]
	return t, ok
}

// coordinatorFor finds the node coordinating groupID (the leader of its partition), creating
// __consumer_offsets on first use.
func (b *Broker) coordinatorFor(ctx context.Context, groupID string) (quorum.BrokerInfo, int16) {
	t, ok := b.offsetsTopicMeta(ctx, true)
	if !ok {
		return quorum.BrokerInfo{}, kerr.CoordinatorNotAvailable.Code
	}
	return b.partitionLeaderBroker(ctx, offsetsTopic, batch.PartitionFor(groupID, int32(len(t.Partitions))))
}

// txnCoordinatorFor finds the node coordinating txnID, creating __transaction_state on first use.
func (b *Broker) txnCoordinatorFor(ctx context.Context, txnID string) (quorum.BrokerInfo, int16) {
	t, ok := b.txnTopicMeta(ctx, true)
	if !ok {
		return quorum.BrokerInfo{}, kerr.CoordinatorNotAvailable.Code
	}
	return b.partitionLeaderBroker(ctx, txnTopic, batch.PartitionFor(txnID, int32(len(t.Partitions))))
}

// partitionLeaderBroker returns the broker leading partition p of topic, waiting up to leaderWait
// for an election.
func (b *Broker) partitionLeaderBroker(ctx context.Context, topic string, p int32) (quorum.BrokerInfo, int16) {
	deadline := time.Now().Add(leaderWait)
	for {
		if pm, ok := b.partitionMeta(topic, p); ok {
			if leader, _ := b.partitionLeader(topic, pm); leader >= 0 {
				if bi, ok := b.ctl.Metadata().Brokers[leader]; ok {
					return bi, 0
				}
			}
		}
		if time.Now().After(deadline) {
			return quorum.BrokerInfo{}, kerr.CoordinatorNotAvailable.Code
		}
		select {
		case <-ctx.Done():
			return quorum.BrokerInfo{}, kerr.CoordinatorNotAvailable.Code
		case <-b.ctl.Changed():
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// internalPartitionLed returns this node's replica of partition p of an internal topic once it has
// a leader, waiting a little for an election (after a start or a topic creation) so that clients do
// not spend their retries on COORDINATOR_NOT_AVAILABLE.
func (b *Broker) internalPartitionLed(ctx context.Context, topic string, p int32) (*replica.Partition, bool) {
	deadline := time.Now().Add(leaderWait)
	for {
		if part, ok := b.replicas.Partition(topic, p); ok {
			if _, leader, _ := part.Leader(); leader >= 0 {
				return part, true
			}
		}
		if time.Now().After(deadline) {
			return nil, false
		}
		select {
		case <-ctx.Done():
			return nil, false
		case <-b.ctl.Changed():
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// appendInternal writes a coordinator's batch to its partition of an internal topic (partitionFor
// picks it from the partition count) through Raft, with the errors a coordinator's client expects.
func (b *Broker) appendInternal(ctx context.Context, topic string, partitionFor func(n int32) int32, batch []byte) error {
	t, ok := b.ctl.Metadata().Topics[topic]
	if !ok {
		return kerr.CoordinatorNotAvailable
	}
	part, ok := b.replicas.Partition(topic, partitionFor(int32(len(t.Partitions))))
	if !ok {
		return kerr.NotCoordinator
	}
	ctx, cancel := context.WithTimeout(ctx, offsetsTimeout)
	defer cancel()
	_, err := part.Produce(ctx, batch)
	return coordinatorError(err)
}
