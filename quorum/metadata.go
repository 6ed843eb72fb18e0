package quorum

import (
	"fmt"
	"maps"
	"slices"
	"time"

	sm "github.com/lni/dragonboat/v4/statemachine"
)

// The cluster metadata the controller group replicates: brokers, topics and their partitions'
// placement, configs, reassignments, security (security.go). Commands (command.go and one file per
// concern) change it; the state machine (statemachine.go) holds it.

// MaxPartitionsPerTopic bounds CreateTopic/CreatePartitions so a typo cannot allocate millions
// of Raft groups.
const MaxPartitionsPerTopic = 100_000

// BrokerInfo is a registered broker: its Kafka listener and its Raft address.
type BrokerInfo struct {
	NodeID   int32
	Host     string
	Port     int32
	Rack     string
	RaftAddr string

	TLSPort int32 `json:",omitempty"` // the TLS listener's port on Host (0: none)
}

// PartitionMeta is one partition's placement.
type PartitionMeta struct {
	Partition int32
	ShardID   uint64  // the partition's Raft shard, unique for the cluster's lifetime
	Replicas  []int32 // broker ids; the first is the preferred leader
	// Leader and LeaderEpoch are the Raft leader and term last reported (ReportLeaders); Leader 0
	// means none reported yet. A broker hosting the partition knows better from its own replica.
	Leader      int32 `json:",omitempty"`
	LeaderEpoch int32 `json:",omitempty"`
	// Target is the replica set a reassignment moves the partition to (nil: none in progress).
	// The partition's leader changes the Raft membership step by step, then CompleteReassignment
	// makes Target the Replicas.
	Target []int32 `json:",omitempty"`
	// Former lists brokers removed from the partition's Raft group: dragonboat never lets a
	// removed replica id rejoin a group, so a reassignment cannot name them again.
	Former []int32 `json:",omitempty"`
	// Joined lists brokers that joined the group through a reassignment: they start their replica
	// as a (promoted) learner every time (quorum.Host.StartLearnerShard).
	Joined []int32 `json:",omitempty"`
	// LogStartOffset is the floor DeleteRecords set: offsets below it are gone for clients (the
	// partition's log start offset is the larger of it and the first offset its files hold).
	LogStartOffset int64 `json:",omitempty"`
}

// TopicMeta describes a topic.
type TopicMeta struct {
	Name       string
	ID         [16]byte // random UUID chosen at creation
	Internal   bool
	Partitions []PartitionMeta
	Configs    map[string]string // only explicitly set topic configs
}

// Metadata is an immutable snapshot of the cluster metadata: never mutate a returned value or
// anything it points to. Commands change it copy-on-write (the maps and topics they touch).
type Metadata struct {
	Version        uint64 // bumps on every change
	ClusterID      string // set once at controller bootstrap (22 chars of URL-safe base64, like Kafka's)
	Brokers        map[int32]BrokerInfo
	Topics         map[string]*TopicMeta
	NextShardID    uint64 // the next partition's shard id
	NextProducerID int64  // the first id of the next producer-id block

	Security *Security `json:",omitempty"` // SCRAM users and ACLs (security.go); nil: none
	// Deleted holds topics deleted in the last DeletedTopicMemory: name -> deletion time (Unix ms,
	// the proposer's clock). Brokers hold off auto-creating such a name for a while.
	Deleted map[string]int64 `json:",omitempty"`
}

// DeletedTopicMemory is how long Metadata.Deleted remembers a deleted topic.
const DeletedTopicMemory = time.Minute

// TopicSpec is a CreateTopic request. The broker resolves Kafka's defaults (-1) and validates
// names; the controller rejects what it cannot place.
type TopicSpec struct {
	Name              string
	Partitions        int32
	ReplicationFactor int16
	Configs           map[string]string
	Internal          bool
	// Assignment, when set, places partition i on the brokers Assignment[i] (the first is the
	// preferred leader), as Kafka's manual replica assignment; Partitions and ReplicationFactor then
	// follow from it.
	Assignment [][]int32 `json:",omitempty"`
}

func emptyMetadata() *Metadata {
	return &Metadata{
		Brokers:        map[int32]BrokerInfo{},
		Topics:         map[string]*TopicMeta{},
		NextShardID:    FirstPartitionShardID,
		NextProducerID: 1,
	}
}

// assign appends count partitions to parts. Replicas go round-robin over the sorted brokers,
// starting at the number of partitions already in the cluster so that preferred leaders spread
// evenly across topics; each new partition takes the next shard id.
func (md *Metadata) assign(parts []PartitionMeta, brokers []int32, count int32, rf int) []PartitionMeta {
	start := 0
	for _, t := range md.Topics {
		start += len(t.Partitions)
	}
	n := len(brokers)
	for i := int32(0); i < count; i++ {
		p := int32(len(parts))
		replicas := make([]int32, rf)
		for j := range replicas {
			replicas[j] = brokers[(start+int(i)+j)%n]
		}
		parts = append(parts, PartitionMeta{Partition: p, ShardID: md.NextShardID, Replicas: replicas})
		md.NextShardID++
	}
	return parts
}

// place appends partitions on the given replica lists (a manual assignment), each taking the next
// shard id.
func (md *Metadata) place(parts []PartitionMeta, assignment [][]int32) []PartitionMeta {
	for _, replicas := range assignment {
		parts = append(parts, PartitionMeta{Partition: int32(len(parts)), ShardID: md.NextShardID, Replicas: append([]int32(nil), replicas...)})
		md.NextShardID++
	}
	return parts
}

// CheckAssignment validates a manual replica assignment as Kafka does: every partition has rf
// replicas (the same count for all), on registered brokers, none twice. It returns why not, or "".
func (md *Metadata) CheckAssignment(assignment [][]int32, rf int) string {
	for i, replicas := range assignment {
		if len(replicas) == 0 || len(replicas) != rf {
			return fmt.Sprintf("partition %d lists %d replicas; every partition needs the same count, %d", i, len(replicas), rf)
		}
		for j, id := range replicas {
			if _, ok := md.Brokers[id]; !ok {
				return fmt.Sprintf("partition %d: broker %d is not registered", i, id)
			}
			if slices.Contains(replicas[:j], id) {
				return fmt.Sprintf("partition %d lists broker %d twice", i, id)
			}
		}
	}
	return ""
}

// partitionOf finds partition p of topic; when there is none, ok is false and res says which part
// is unknown.
func (md *Metadata) partitionOf(topic string, p int32) (t *TopicMeta, res sm.Result, ok bool) {
	t, ok = md.Topics[topic]
	if !ok {
		return nil, sm.Result{Value: resultUnknownTopic}, false
	}
	if p < 0 || int(p) >= len(t.Partitions) {
		return nil, sm.Result{Value: resultUnknownPartition}, false
	}
	return t, sm.Result{}, true
}

// withTopic returns md with topic tm (new or replacing the one of that name), copy on write.
func withTopic(md *Metadata, tm *TopicMeta) *Metadata {
	next := *md
	next.Topics = maps.Clone(md.Topics)
	if next.Topics == nil {
		next.Topics = map[string]*TopicMeta{}
	}
	next.Topics[tm.Name] = tm
	return &next
}

// withPartition returns md with partition i of topic t replaced by pm (copy on write).
func withPartition(md *Metadata, t *TopicMeta, i int, pm PartitionMeta) *Metadata {
	tm := *t
	tm.Partitions = slices.Clone(t.Partitions)
	tm.Partitions[i] = pm
	return withTopic(md, &tm)
}

func sortedBrokerIDs(m map[int32]BrokerInfo) []int32 {
	ids := make([]int32, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func copyConfigs(old, set map[string]string, remove []string) map[string]string {
	out := make(map[string]string, len(old)+len(set))
	maps.Copy(out, old)
	maps.Copy(out, set)
	for _, k := range remove {
		delete(out, k)
	}
	return out
}
