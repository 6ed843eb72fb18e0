package quorum

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"time"

	sm "github.com/lni/dragonboat/v4/statemachine"
)

// Topics: creation and deletion, growing partitions, configs, DeleteRecords' log start offsets.

// CreateTopic creates a topic: replicas round-robin over the registered brokers (leaders spread
// evenly across the cluster), one new shard id per partition.
func (c *Controller) CreateTopic(ctx context.Context, spec TopicSpec) (*TopicMeta, error) {
	if len(spec.Assignment) > 0 {
		spec.Partitions, spec.ReplicationFactor = int32(len(spec.Assignment)), int16(len(spec.Assignment[0]))
	}
	id := newTopicID()
	res, _, err := c.propose(ctx, &createTopicCmd{Spec: &spec, TopicID: id})
	if errors.Is(err, ErrTopicExists) {
		if tm := c.Metadata().Topics[spec.Name]; tm != nil && tm.ID == id {
			return tm, nil // our own earlier attempt created it
		}
	}
	if err != nil {
		return nil, err
	}
	var tm TopicMeta
	if err := json.Unmarshal(res.Data, &tm); err != nil {
		return nil, fmt.Errorf("quorum: create topic result: %w", err)
	}
	return &tm, nil
}

func newTopicID() [16]byte {
	var b [16]byte
	for b == [16]byte{} { // Kafka reserves the zero UUID
		rand.Read(b[:])
	}
	return b
}

type createTopicCmd struct {
	Spec    *TopicSpec `json:"spec,omitempty"`
	TopicID [16]byte   `json:"topic_id,omitzero"` // chosen by the proposer
}

func (*createTopicCmd) op() string { return "create_topic" }

func (cmd *createTopicCmd) validate() error {
	spec := cmd.Spec
	if spec == nil || spec.Name == "" {
		return fmt.Errorf("%w: empty topic name", ErrInvalidRequest)
	}
	if spec.Partitions < 1 || spec.Partitions > MaxPartitionsPerTopic {
		return ErrInvalidPartitions
	}
	if spec.ReplicationFactor < 1 {
		return ErrInvalidReplicationFactor
	}
	return nil
}

// apply answers the created topic (JSON).
func (cmd *createTopicCmd) apply(md *Metadata) (*Metadata, sm.Result) {
	spec := cmd.Spec
	if spec == nil || spec.Name == "" {
		return nil, invalid("no topic")
	}
	if _, ok := md.Topics[spec.Name]; ok {
		return nil, sm.Result{Value: resultTopicExists}
	}
	if spec.Partitions < 1 || spec.Partitions > MaxPartitionsPerTopic {
		return nil, sm.Result{Value: resultInvalidPartitions}
	}
	brokers := sortedBrokerIDs(md.Brokers)
	if len(spec.Assignment) > 0 {
		if res, ok := checkAssignment(md, spec.Assignment, len(spec.Assignment[0])); !ok {
			return nil, res
		}
	} else if spec.ReplicationFactor < 1 || int(spec.ReplicationFactor) > len(brokers) {
		return nil, sm.Result{Value: resultInvalidReplicationFactor}
	}
	next := *md
	tm := &TopicMeta{Name: spec.Name, ID: cmd.TopicID, Internal: spec.Internal, Configs: copyConfigs(spec.Configs, nil, nil)}
	if len(spec.Assignment) > 0 {
		tm.Partitions = next.place(tm.Partitions, spec.Assignment)
	} else {
		tm.Partitions = next.assign(tm.Partitions, brokers, spec.Partitions, int(spec.ReplicationFactor))
	}
	out := withTopic(&next, tm)
	if _, ok := md.Deleted[tm.Name]; ok {
		out.Deleted = maps.Clone(md.Deleted)
		delete(out.Deleted, tm.Name)
	}
	data, _ := json.Marshal(tm)
	return out, sm.Result{Data: data}
}

// checkAssignment is CheckAssignment as a state machine result.
func checkAssignment(md *Metadata, assignment [][]int32, rf int) (sm.Result, bool) {
	if why := md.CheckAssignment(assignment, rf); why != "" {
		return sm.Result{Value: resultInvalidReplicas, Data: []byte(why)}, false
	}
	return sm.Result{}, true
}

// DeleteTopic deletes a topic; its shard ids are never reused. Brokers watching Changed stop the
// partitions' shards and remove their data.
func (c *Controller) DeleteTopic(ctx context.Context, name string) error {
	_, retried, err := c.propose(ctx, &deleteTopicCmd{Name: name, TimeMs: time.Now().UnixMilli()})
	if retried && errors.Is(err, ErrUnknownTopic) {
		return nil // an earlier attempt deleted it
	}
	return err
}

type deleteTopicCmd struct {
	noChecks
	Name   string `json:"name,omitempty"`
	TimeMs int64  `json:"time_ms,omitempty"` // the proposer's clock: Metadata.Deleted
}

func (*deleteTopicCmd) op() string { return "delete_topic" }

func (cmd *deleteTopicCmd) apply(md *Metadata) (*Metadata, sm.Result) {
	if _, ok := md.Topics[cmd.Name]; !ok {
		return nil, sm.Result{Value: resultUnknownTopic}
	}
	next := *md
	next.Topics = maps.Clone(md.Topics)
	delete(next.Topics, cmd.Name)
	next.Deleted = map[string]int64{cmd.Name: cmd.TimeMs}
	for name, at := range md.Deleted {
		if at > cmd.TimeMs-DeletedTopicMemory.Milliseconds() && name != cmd.Name {
			next.Deleted[name] = at
		}
	}
	return &next, sm.Result{}
}

// CreatePartitions grows a topic to totalCount partitions (it never shrinks). assignment, when not
// nil, places the new partitions (one replica list each, in order).
func (c *Controller) CreatePartitions(ctx context.Context, name string, totalCount int32, assignment [][]int32) error {
	_, retried, err := c.propose(ctx, &createPartitionsCmd{Name: name, Count: totalCount, Assignment: assignment})
	if retried && errors.Is(err, ErrInvalidPartitions) {
		if tm := c.Metadata().Topics[name]; tm != nil && len(tm.Partitions) == int(totalCount) {
			return nil // an earlier attempt grew it
		}
	}
	return err
}

type createPartitionsCmd struct {
	Name  string `json:"name,omitempty"`
	Count int32  `json:"count,omitempty"` // the new total
	// Assignment: the new partitions' replicas (manual assignment).
	Assignment [][]int32 `json:"assignment,omitempty"`
}

func (*createPartitionsCmd) op() string { return "create_partitions" }

func (cmd *createPartitionsCmd) validate() error {
	if cmd.Count < 1 || cmd.Count > MaxPartitionsPerTopic {
		return ErrInvalidPartitions
	}
	return nil
}

func (cmd *createPartitionsCmd) apply(md *Metadata) (*Metadata, sm.Result) {
	old, ok := md.Topics[cmd.Name]
	if !ok {
		return nil, sm.Result{Value: resultUnknownTopic}
	}
	if cmd.Count <= int32(len(old.Partitions)) || cmd.Count > MaxPartitionsPerTopic {
		return nil, sm.Result{Value: resultInvalidPartitions}
	}
	rf := 1
	if len(old.Partitions) > 0 {
		rf = len(old.Partitions[0].Replicas)
	}
	added := int(cmd.Count) - len(old.Partitions)
	brokers := sortedBrokerIDs(md.Brokers)
	if cmd.Assignment != nil {
		if len(cmd.Assignment) != added {
			return nil, invalidReplicas("%d replica lists for %d new partitions", len(cmd.Assignment), added)
		}
		if res, ok := checkAssignment(md, cmd.Assignment, rf); !ok {
			return nil, res
		}
	} else if rf > len(brokers) {
		return nil, sm.Result{Value: resultInvalidReplicationFactor}
	}
	next := *md
	tm := *old
	parts := make([]PartitionMeta, len(old.Partitions), cmd.Count)
	copy(parts, old.Partitions)
	if cmd.Assignment != nil {
		tm.Partitions = next.place(parts, cmd.Assignment)
	} else {
		tm.Partitions = next.assign(parts, brokers, int32(added), rf)
	}
	return withTopic(&next, &tm), sm.Result{}
}

// AlterTopicConfig sets and removes explicit topic configs (Kafka's incremental alter);
// validation of names and values is the broker's.
func (c *Controller) AlterTopicConfig(ctx context.Context, name string, set map[string]string, remove []string) error {
	_, _, err := c.propose(ctx, &alterConfigCmd{Name: name, Set: set, Remove: remove})
	return err
}

type alterConfigCmd struct {
	noChecks
	Name   string            `json:"name,omitempty"`
	Set    map[string]string `json:"set,omitempty"`
	Remove []string          `json:"remove,omitempty"`
}

func (*alterConfigCmd) op() string { return "alter_config" }

func (cmd *alterConfigCmd) apply(md *Metadata) (*Metadata, sm.Result) {
	old, ok := md.Topics[cmd.Name]
	if !ok {
		return nil, sm.Result{Value: resultUnknownTopic}
	}
	tm := *old
	tm.Configs = copyConfigs(old.Configs, cmd.Set, cmd.Remove)
	return withTopic(md, &tm), sm.Result{}
}

// DeleteRecords raises a partition's log start offset floor to offset (Kafka's DeleteRecords); it
// never lowers it. The broker checks offset against the high watermark first.
func (c *Controller) DeleteRecords(ctx context.Context, topic string, partition int32, offset int64) error {
	_, _, err := c.propose(ctx, &deleteRecordsCmd{Name: topic, Partition: partition, Offset: offset})
	return err
}

type deleteRecordsCmd struct {
	noChecks
	Name      string `json:"name,omitempty"`
	Offset    int64  `json:"n,omitempty"` // the new log start offset
	Partition int32  `json:"partition,omitempty"`
}

func (*deleteRecordsCmd) op() string { return "delete_records" }

func (cmd *deleteRecordsCmd) apply(md *Metadata) (*Metadata, sm.Result) {
	old, res, ok := md.partitionOf(cmd.Name, cmd.Partition)
	if !ok {
		return nil, res
	}
	pm := old.Partitions[cmd.Partition]
	if pm.LogStartOffset >= cmd.Offset {
		return nil, sm.Result{} // never moves back
	}
	pm.LogStartOffset = cmd.Offset
	return withPartition(md, old, int(cmd.Partition), pm), sm.Result{}
}
