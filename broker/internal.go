package broker

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/sluicebroker/sluice/batch"
	"github.com/sluicebroker/sluice/quorum"
	"github.com/sluicebroker/sluice/replica"
)

// The coordinators' internal topics, __consumer_offsets (groups) and __transaction_state
// (transactions): created on first use, compacted, replicated on up to three brokers. A key's
// coordinator is the leader of its partition (batch.PartitionFor); it writes its records there through
// Raft, and replays the partition when it takes the partition over, before answering for its keys.

const (
	// internalTimeout bounds one coordinator write or one partition's replay.
	internalTimeout = 10 * time.Second
	// leaderWait bounds how long a coordinator request waits for its partition's leader.
	leaderWait = 5 * time.Second
)

// internalTopic is one coordinator's internal topic as this node serves it.
type internalTopic struct {
	name       string
	partitions int32 // the partition count it is created with

	mu     sync.Mutex      // serialises loads
	loaded map[int32]int32 // partition -> the leader epoch at which its records were replayed
}

// partitionReplayer is a coordinator as its internal topic's loader sees it: it forgets the keys of
// a partition, and rebuilds them from the partition's batches (read back whole, back to back).
type partitionReplayer interface {
	Unload(inPartition func(key string) bool)
	ReplayBatches(buf []byte, inPartition func(key string) bool) (next int64, err error)
}

// internalSegmentBytes is the internal topics' segment.bytes (Kafka's default for them).
const internalSegmentBytes = "104857600"

// closeOnShutdown closes a coordinator when the broker closes.
func (b *Broker) closeOnShutdown(close func()) {
	go func() {
		<-b.ctx.Done()
		close()
	}()
}

// internalTopicMeta returns the topic's metadata, creating the topic when create is set.
func (b *Broker) internalTopicMeta(ctx context.Context, t *internalTopic, create bool) (*quorum.TopicMeta, bool) {
	md := b.ctl.Metadata()
	if tm, ok := md.Topics[t.name]; ok || !create {
		return tm, ok
	}
	rf := int16(max(min(len(md.Brokers), 3), 1))
	// cleanup.policy=compact as in Kafka: the log cleaner keeps each group's and transactional id's latest
	// record (a load replays only those), and time or size retention never deletes one. 100 MiB segments
	// (Kafka's offsets.topic.segment.bytes and transaction.state.log.segment.bytes) so segments seal and
	// the cleaner gets to them.
	err := b.createTopic(ctx, quorum.TopicSpec{Name: t.name, Partitions: t.partitions, ReplicationFactor: rf,
		Internal: true, Configs: map[string]string{"cleanup.policy": "compact", "segment.bytes": internalSegmentBytes}})
	if err != nil && errorCode(err) != kerr.TopicAlreadyExists.Code {
		b.log.Warn("creating an internal topic failed", "topic", t.name, "err", err)
	}
	tm, ok := b.ctl.Metadata().Topics[t.name]
	return tm, ok
}

// coordinatorNode finds the node coordinating key (the leader of its partition of t), creating the
// topic on first use.
func (b *Broker) coordinatorNode(ctx context.Context, t *internalTopic, key string) (quorum.BrokerInfo, int16) {
	tm, ok := b.internalTopicMeta(ctx, t, true)
	if !ok {
		return quorum.BrokerInfo{}, kerr.CoordinatorNotAvailable.Code
	}
	return b.partitionLeaderBroker(ctx, t.name, batch.PartitionFor(key, int32(len(tm.Partitions))))
}

// partitionLeaderBroker returns the broker leading partition p of topic, waiting up to leaderWait
// for an election.
func (b *Broker) partitionLeaderBroker(ctx context.Context, topic string, p int32) (quorum.BrokerInfo, int16) {
	deadline := time.Now().Add(leaderWait)
	for {
		if pm, ok := b.agent.PartitionMeta(topic, p); ok {
			if leader, _ := b.agent.PartitionLeader(topic, pm); leader >= 0 {
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

// appendInternal writes a coordinator's batch to key's partition of an internal topic through Raft,
// with the errors a coordinator's client expects.
func (b *Broker) appendInternal(ctx context.Context, topic, key string, encoded []byte) error {
	part, err := b.internalPartitionOf(topic, key)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, internalTimeout)
	defer cancel()
	_, err = part.Produce(ctx, encoded)
	return coordinatorError(err)
}

// internalPartitionOf is this node's replica of key's partition of an internal topic:
// COORDINATOR_NOT_AVAILABLE before the topic exists, NOT_COORDINATOR where this node has no replica.
func (b *Broker) internalPartitionOf(topic, key string) (*replica.Partition, error) {
	tm, ok := b.ctl.Metadata().Topics[topic]
	if !ok {
		return nil, kerr.CoordinatorNotAvailable
	}
	part, ok := b.replicas.Partition(topic, partitionOf(key, tm))
	if !ok {
		return nil, kerr.NotCoordinator
	}
	return part, nil
}

// partitionOf is key's partition of an internal topic.
func partitionOf(key string, tm *quorum.TopicMeta) int32 {
	return batch.PartitionFor(key, int32(len(tm.Partitions)))
}

// coordinatorError maps a partition error to what a coordinator's client expects.
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

// coordinatorReady checks this node coordinates key and has loaded its partition of t, creating t on
// first use: 0, or the code to answer.
func (b *Broker) coordinatorReady(ctx context.Context, t *internalTopic, c partitionReplayer, key string) int16 {
	tm, ok := b.internalTopicMeta(ctx, t, true)
	if !ok {
		return kerr.CoordinatorNotAvailable.Code
	}
	n := int32(len(tm.Partitions))
	return b.loadInternalPartition(ctx, t, c, batch.PartitionFor(key, n), n)
}

// loadInternalPartition makes sure this node leads partition p (of n) of t and that c has replayed
// it at the current leader epoch: 0, or the code to answer (NOT_COORDINATOR,
// COORDINATOR_NOT_AVAILABLE, COORDINATOR_LOAD_IN_PROGRESS). A partition this node no longer leads is
// unloaded.
func (b *Broker) loadInternalPartition(ctx context.Context, t *internalTopic, c partitionReplayer, p, n int32) int16 {
	if pm, ok := b.agent.PartitionMeta(t.name, p); ok && !containsInt32(pm.Replicas, b.cfg.NodeID) {
		return kerr.NotCoordinator.Code // hosted elsewhere: the client asks FindCoordinator again
	}
	part, ok := b.internalPartitionLed(ctx, t.name, p)
	if !ok {
		return kerr.CoordinatorNotAvailable.Code
	}
	isLeader, _, epoch := part.Leader()
	inPartition := func(key string) bool { return batch.PartitionFor(key, n) == p }
	t.mu.Lock()
	defer t.mu.Unlock()
	if !isLeader {
		if _, ok := t.loaded[p]; ok {
			delete(t.loaded, p)
			c.Unload(inPartition)
		}
		return kerr.NotCoordinator.Code
	}
	if e, ok := t.loaded[p]; ok && e == epoch {
		return 0
	}
	c.Unload(inPartition)
	if err := b.replayInternal(ctx, t.name, part, func(buf []byte) (int64, error) { return c.ReplayBatches(buf, inPartition) }); err != nil {
		b.log.Warn("loading an internal topic partition failed", "topic", t.name, "partition", p, "err", err)
		return kerr.CoordinatorLoadInProgress.Code
	}
	if t.loaded == nil {
		t.loaded = map[int32]int32{}
	}
	t.loaded[p] = epoch
	return 0
}

// isLoaded reports whether partition p of t was loaded (and not unloaded since).
func (t *internalTopic) isLoaded(p int32) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.loaded[p]
	return ok
}

// replayInternal writes an empty record through Raft, so that everything committed before it is
// applied, then replays the partition from its start up to that record.
func (b *Broker) replayInternal(ctx context.Context, topic string, part *replica.Partition, replay func(buf []byte) (next int64, err error)) error {
	ctx, cancel := context.WithTimeout(ctx, internalTimeout)
	defer cancel()
	res, err := part.Produce(ctx, batch.Encode([]batch.Record{{}}, time.Now().UnixMilli(), 0, batch.NoProducer))
	if err != nil {
		return err
	}
	for off := part.LogStartOffset(); off < res.BaseOffset; {
		r, err := part.Read(off, 1<<20)
		if err != nil {
			return err
		}
		buf, err := r.AppendTo(nil)
		r.Release()
		if err != nil {
			return err
		}
		next, err := replay(buf)
		if err != nil {
			return err
		}
		if next <= off {
			return fmt.Errorf("no progress reading %s", topic)
		}
		off = next
	}
	return nil
}
