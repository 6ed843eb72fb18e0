package quorum

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lni/dragonboat/v4/client"
	sm "github.com/lni/dragonboat/v4/statemachine"
)

// Controller errors, returned by the Controller's methods.
var (
	ErrTopicExists              = errors.New("quorum: topic already exists")
	ErrUnknownTopic             = errors.New("quorum: unknown topic")
	ErrInvalidPartitions        = errors.New("quorum: invalid partition count")
	ErrInvalidReplicationFactor = errors.New("quorum: invalid replication factor")
	ErrInvalidRequest           = errors.New("quorum: invalid controller request")
	ErrUnknownPartition         = errors.New("quorum: unknown partition")
	ErrInvalidReplicas          = errors.New("quorum: invalid replica assignment")
	ErrNoReassignment           = errors.New("quorum: no reassignment in progress")
	// ErrNoController: the controller group has no leader (no quorum of voters reachable) or
	// did not answer in time.
	ErrNoController = errors.New("quorum: no controller available")
)

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

	TLSPort  int32 `json:",omitempty"` // the TLS listener's port on Host (0: none)
	SASLPort int32 `json:",omitempty"` // the SASL_PLAINTEXT listener's port on Host (0: none)
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
// anything it points to.
type Metadata struct {
	Version        uint64 // bumps on every change
	ClusterID      string // set once at controller bootstrap (22 chars of URL-safe base64, like Kafka's)
	Brokers        map[int32]BrokerInfo
	Topics         map[string]*TopicMeta
	NextShardID    uint64 // the next partition's shard id
	NextProducerID int64  // the first id of the next producer-id block

	Security *Security `json:",omitempty"` // SCRAM users and ACLs (security.go); nil: none
	Quotas   *Quotas   `json:",omitempty"` // client quotas (quotas.go); nil: none
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

// ParseVoters parses Kafka's controller.quorum.voters shape, "1@127.0.0.1:9093,2@host:9093",
// into nodeID -> raft address.
func ParseVoters(s string) (map[uint64]string, error) {
	out := map[uint64]string{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		idStr, addr, ok := strings.Cut(part, "@")
		if !ok {
			return nil, fmt.Errorf("quorum: voter %q: want id@host:port", part)
		}
		id, err := strconv.ParseUint(idStr, 10, 64)
		if err != nil || id == 0 || id > 1<<31-1 {
			return nil, fmt.Errorf("quorum: voter %q: id must be a broker id >= 1", part)
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil || host == "" || port == "" {
			return nil, fmt.Errorf("quorum: voter %q: bad address: want host:port", part)
		}
		if _, dup := out[id]; dup {
			return nil, fmt.Errorf("quorum: voter id %d listed twice", id)
		}
		out[id] = addr
	}
	if len(out) == 0 {
		return nil, errors.New("quorum: no controller voters")
	}
	return out, nil
}

// Controller is this node's view of (and door to) the controller group, shard ControllerShardID.
// Every voter holds the full metadata; reads are local and cheap, changes go through Raft.
type Controller struct {
	h       *Host
	session *client.Session
	cur     atomic.Pointer[Metadata]

	mu      sync.Mutex
	changed chan struct{}

	live     liveness // broker heartbeats (liveness.go)
	observer bool     // a non-voting member (not in controller.quorum.voters)
}

// StartController starts this node's replica of the controller group. voters is the
// controller.quorum.voters map (ParseVoters). A node that is not a voter runs as an observer: a
// non-voting member that follows the metadata and forwards its proposals, like a KRaft broker that
// is not a controller. A voter must add it first (AddObserver, which the broker's
// BrokerRegistration handler calls); until then its WaitReady waits. On restart dragonboat's
// recorded membership wins. It returns at once: use WaitReady before relying on Metadata (a voter
// alone cannot elect a leader until a quorum of voters runs).
func (h *Host) StartController(voters map[uint64]string, join bool) (*Controller, error) {
	_, voter := voters[h.cfg.NodeID]
	c := &Controller{h: h, changed: make(chan struct{}), observer: !voter}
	c.cur.Store(emptyMetadata())
	c.session = h.nh.GetNoOPSession(ControllerShardID)
	m, j := h.members(ControllerShardID, voters, join || !voter)
	cfg := h.shardConfig(ControllerShardID)
	cfg.IsNonVoting = !voter // every start, as for partition learners (StartLearnerShard)
	create := func(shardID, replicaID uint64) sm.IStateMachine { return &controllerSM{c: c, md: emptyMetadata()} }
	if err := h.nh.StartReplica(m, j, create, cfg); err != nil {
		return nil, fmt.Errorf("quorum: start controller: %w", mapError(err))
	}
	go c.bootstrap()
	return c, nil
}

// Observer reports whether this node follows the controller group without a vote.
func (c *Controller) Observer() bool { return c.observer }

// AddObserver adds broker id, at raftAddr, to the controller group as a non-voting member (a broker
// joining the cluster). Adding it again is a no-op.
func (c *Controller) AddObserver(ctx context.Context, id int32, raftAddr string) error {
	if id <= 0 || raftAddr == "" {
		return fmt.Errorf("%w: observer %d at %q", ErrInvalidRequest, id, raftAddr)
	}
	for {
		m, err := c.h.Membership(ctx, ControllerShardID)
		if err != nil {
			return err
		}
		if addr, ok := m.Voters[uint64(id)]; ok {
			if addr != raftAddr {
				return fmt.Errorf("%w: node %d is a voter at %s, not %s", ErrInvalidRequest, id, addr, raftAddr)
			}
			return nil
		}
		if addr, ok := m.NonVoting[uint64(id)]; ok {
			if addr != raftAddr {
				return fmt.Errorf("%w: node %d joined at %s, not %s", ErrInvalidRequest, id, addr, raftAddr)
			}
			return nil
		}
		if m.Removed[uint64(id)] {
			return fmt.Errorf("%w: node %d was removed from the cluster and cannot rejoin with that id", ErrInvalidRequest, id)
		}
		err = c.h.AddNonVotingReplica(ctx, ControllerShardID, uint64(id), raftAddr, m.ConfigChangeID)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
		// Another membership change came first (ConfigChangeID moved on): read again and retry.
		if c.h.sleepTick(ctx) != nil {
			return err
		}
	}
}

func emptyMetadata() *Metadata {
	return &Metadata{
		Brokers:        map[int32]BrokerInfo{},
		Topics:         map[string]*TopicMeta{},
		NextShardID:    FirstPartitionShardID,
		NextProducerID: 1,
	}
}

// bootstrap sets the cluster id once a leader exists. Every voter proposes its own random id
// after catching up (so a restart proposes nothing); the first applied wins, the state machine
// ignores the others.
func (c *Controller) bootstrap() {
	for c.Metadata().ClusterID == "" {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := c.catchUp(ctx)
		if err == nil && c.Metadata().ClusterID == "" {
			_, _, err = c.propose(ctx, command{Op: opBootstrap, ClusterID: newClusterID()})
		}
		cancel()
		if errors.Is(err, ErrShardClosed) || errors.Is(err, ErrShardNotFound) {
			return
		}
		if err != nil {
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// catchUp waits until everything committed in the controller group before the call is applied
// here (a linearizable read through the leader's read index).
func (c *Controller) catchUp(ctx context.Context) error {
	for {
		actx, cancel := context.WithTimeout(ctx, controllerAttempt)
		_, err := c.h.nh.SyncRead(actx, ControllerShardID, nil)
		cancel()
		if err == nil {
			return nil
		}
		if err = mapError(err); errors.Is(err, ErrShardClosed) || errors.Is(err, ErrShardNotFound) {
			return err
		}
		if ctx.Err() != nil || c.h.sleepTick(ctx) != nil {
			return ErrNoController
		}
	}
}

// WaitReady waits until this node's replica has caught up with the controller group and the
// cluster id is set. Call it after StartController, before serving Metadata.
func (c *Controller) WaitReady(ctx context.Context) error {
	if err := c.catchUp(ctx); err != nil {
		return err
	}
	for {
		ch := c.Changed()
		if c.Metadata().ClusterID != "" {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ErrNoController
		}
	}
}

// Metadata returns the current metadata (an atomic load; cheap enough for every Metadata request).
func (c *Controller) Metadata() *Metadata { return c.cur.Load() }

// Changed returns a channel closed at the next change; watchers then re-read Metadata and call
// Changed again.
func (c *Controller) Changed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}

// Leader reports the controller group's leader as this node knows it.
func (c *Controller) Leader() (nodeID uint64, ok bool) {
	id, _, ok := c.h.LeaderInfo(ControllerShardID)
	return id, ok
}

func (c *Controller) publish(md *Metadata) {
	c.cur.Store(md)
	c.mu.Lock()
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

// RegisterBroker records (or updates) a broker's addresses.
func (c *Controller) RegisterBroker(ctx context.Context, b BrokerInfo) error {
	if b.NodeID < 0 || b.Host == "" || b.Port <= 0 {
		return fmt.Errorf("%w: broker %d at %s:%d", ErrInvalidRequest, b.NodeID, b.Host, b.Port)
	}
	_, _, err := c.propose(ctx, command{Op: opRegisterBroker, Broker: &b})
	return err
}

// CreateTopic creates a topic: replicas round-robin over the registered brokers (leaders spread
// evenly across the cluster), one new shard id per partition.
func (c *Controller) CreateTopic(ctx context.Context, spec TopicSpec) (*TopicMeta, error) {
	if spec.Name == "" {
		return nil, fmt.Errorf("%w: empty topic name", ErrInvalidRequest)
	}
	if len(spec.Assignment) > 0 {
		spec.Partitions, spec.ReplicationFactor = int32(len(spec.Assignment)), int16(len(spec.Assignment[0]))
	}
	if spec.Partitions < 1 || spec.Partitions > MaxPartitionsPerTopic {
		return nil, ErrInvalidPartitions
	}
	if spec.ReplicationFactor < 1 {
		return nil, ErrInvalidReplicationFactor
	}
	id := newTopicID()
	res, _, err := c.propose(ctx, command{Op: opCreateTopic, Spec: &spec, TopicID: id})
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

// DeleteTopic deletes a topic; its shard ids are never reused. Brokers watching Changed stop the
// partitions' shards and remove their data.
func (c *Controller) DeleteTopic(ctx context.Context, name string) error {
	_, retried, err := c.propose(ctx, command{Op: opDeleteTopic, Name: name, TimeMs: time.Now().UnixMilli()})
	if retried && errors.Is(err, ErrUnknownTopic) {
		return nil // an earlier attempt deleted it
	}
	return err
}

// CreatePartitions grows a topic to totalCount partitions (it never shrinks). assignment, when not
// nil, places the new partitions (one replica list each, in order).
func (c *Controller) CreatePartitions(ctx context.Context, name string, totalCount int32, assignment [][]int32) error {
	if totalCount < 1 || totalCount > MaxPartitionsPerTopic {
		return ErrInvalidPartitions
	}
	_, retried, err := c.propose(ctx, command{Op: opCreatePartitions, Name: name, Count: totalCount, Assignment: assignment})
	if retried && errors.Is(err, ErrInvalidPartitions) {
		if tm := c.Metadata().Topics[name]; tm != nil && len(tm.Partitions) == int(totalCount) {
			return nil // an earlier attempt grew it
		}
	}
	return err
}

// AlterTopicConfig sets and removes explicit topic configs (Kafka's incremental alter);
// validation of names and values is the broker's.
func (c *Controller) AlterTopicConfig(ctx context.Context, name string, set map[string]string, remove []string) error {
	_, _, err := c.propose(ctx, command{Op: opAlterConfig, Name: name, Set: set, Remove: remove})
	return err
}

// DeleteRecords raises a partition's log start offset floor to offset (Kafka's DeleteRecords); it
// never lowers it. The broker checks offset against the high watermark first.
func (c *Controller) DeleteRecords(ctx context.Context, topic string, partition int32, offset int64) error {
	_, _, err := c.propose(ctx, command{Op: opDeleteRecords, Name: topic, Partition: partition, N: offset})
	return err
}

// AllocateProducerIDs reserves n consecutive producer ids and returns the first. Blocks are
// replicated, so ids are never handed out twice, restarts included.
func (c *Controller) AllocateProducerIDs(ctx context.Context, n int) (first int64, err error) {
	if n < 1 || n > 1<<20 {
		return 0, fmt.Errorf("%w: producer id block of %d", ErrInvalidRequest, n)
	}
	// A retried allocation may waste a block; ids are never handed out twice either way.
	res, _, err := c.propose(ctx, command{Op: opAllocateProducerIDs, N: int64(n)})
	if err != nil {
		return 0, err
	}
	first, err = strconv.ParseInt(string(res.Data), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("quorum: producer id result %q: %w", res.Data, err)
	}
	return first, nil
}

// controllerAttempt bounds one proposal attempt. A proposal forwarded to a leader that has just
// died is lost without an answer, so propose retries after this long (within the caller's ctx).
const controllerAttempt = 2 * time.Second

// propose replicates cmd through the controller group and waits until it is applied here.
// A proposal made on a follower voter is forwarded to the leader by dragonboat's Raft.
// retried reports that an earlier attempt may have been applied already (its answer was lost):
// callers treat "already done" outcomes as success then.
// Observers (non-voting members) propose the same way: dragonboat forwards for them too.
func (c *Controller) propose(ctx context.Context, cmd command) (res sm.Result, retried bool, err error) {
	data, err := json.Marshal(cmd)
	if err != nil {
		return sm.Result{}, false, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	for {
		if ctx.Err() != nil {
			return sm.Result{}, retried, ErrNoController
		}
		actx, cancel := context.WithTimeout(ctx, controllerAttempt)
		res, err := c.h.nh.SyncPropose(actx, c.session, data)
		cancel()
		if err == nil {
			if res.Value != resultOK {
				return res, retried, resultError(res)
			}
			return res, retried, nil
		}
		switch err = mapError(err); {
		case errors.Is(err, ErrNotLeader), errors.Is(err, ErrBusy):
			// Dropped: no leader yet (start-up, election). Not applied; wait a tick.
			if c.h.sleepTick(ctx) != nil {
				return sm.Result{}, retried, ErrNoController
			}
		case errors.Is(err, ErrTimeout):
			retried = true // the entry may have committed; its answer was lost
		default:
			return sm.Result{}, retried, err
		}
	}
}

// ---- the replicated state machine ----

const (
	opBootstrap           = "bootstrap"
	opRegisterBroker      = "register_broker"
	opCreateTopic         = "create_topic"
	opDeleteTopic         = "delete_topic"
	opCreatePartitions    = "create_partitions"
	opAlterConfig         = "alter_config"
	opAllocateProducerIDs = "allocate_producer_ids"
	opHeartbeat           = "heartbeat"
	opReportLeaders       = "report_leaders"
	opReassign            = "reassign"
	opReassignDone        = "reassign_done"
	opDeleteRecords       = "delete_records"
)

// command is one controller log entry (JSON: small, rare, readable in a log dump). Anything
// random (ids) is chosen by the proposer so that applying is deterministic on every voter.
type command struct {
	Op        string            `json:"op"`
	ClusterID string            `json:"cluster_id,omitempty"`
	Broker    *BrokerInfo       `json:"broker,omitempty"`
	Spec      *TopicSpec        `json:"spec,omitempty"`
	TopicID   [16]byte          `json:"topic_id,omitzero"`
	Name      string            `json:"name,omitempty"`
	Count     int32             `json:"count,omitempty"`
	Set       map[string]string `json:"set,omitempty"`
	Remove    []string          `json:"remove,omitempty"`
	N         int64             `json:"n,omitempty"`
	Node      int32             `json:"node,omitempty"`
	TimeMs    int64             `json:"time_ms,omitempty"`
	Shards    []uint64          `json:"shards,omitempty"`
	Leaders   []LeaderReport    `json:"leaders,omitempty"`
	Partition int32             `json:"partition,omitempty"`
	Replicas  []int32           `json:"replicas,omitempty"`
	Removed   []int32           `json:"removed,omitempty"`
	Sec       *securityCommand  `json:"sec,omitempty"`    // security.go
	Quotas    []QuotaAlteration `json:"quotas,omitempty"` // quotas.go
	// Assignment: the new partitions' replicas of create_partitions (manual assignment).
	Assignment [][]int32 `json:"assignment,omitempty"`
}

// Result codes in sm.Result.Value; data (a created topic, a first producer id) goes in Data.
const (
	resultOK uint64 = iota
	resultTopicExists
	resultUnknownTopic
	resultInvalidPartitions
	resultInvalidReplicationFactor
	resultInvalidRequest
	resultUnknownPartition
	resultInvalidReplicas
	resultNoReassignment
)

// resultError maps a non-OK result code to its error.
func resultError(res sm.Result) error {
	switch res.Value {
	case resultTopicExists:
		return ErrTopicExists
	case resultUnknownTopic:
		return ErrUnknownTopic
	case resultInvalidPartitions:
		return ErrInvalidPartitions
	case resultInvalidReplicationFactor:
		return ErrInvalidReplicationFactor
	case resultUnknownPartition:
		return ErrUnknownPartition
	case resultInvalidReplicas:
		if len(res.Data) > 0 {
			return fmt.Errorf("%w: %s", ErrInvalidReplicas, res.Data)
		}
		return ErrInvalidReplicas
	case resultNoReassignment:
		return ErrNoReassignment
	}
	if len(res.Data) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalidRequest, res.Data)
	}
	return ErrInvalidRequest
}

// controllerSM holds the metadata as an immutable *Metadata replaced on every change
// (copy-on-write of the maps touched), so readers never lock.
type controllerSM struct {
	c  *Controller
	md *Metadata
}

func (s *controllerSM) Update(e sm.Entry) (sm.Result, error) {
	var cmd command
	if err := json.Unmarshal(e.Cmd, &cmd); err != nil {
		// A bad entry is committed already; failing here would halt the group forever.
		return sm.Result{Value: resultInvalidRequest, Data: []byte("undecodable command")}, nil
	}
	if cmd.Op == opHeartbeat {
		return s.applyHeartbeat(&cmd), nil
	}
	next, res := s.apply(&cmd)
	if next != nil {
		next.Version = s.md.Version + 1
		s.md = next
		s.c.publish(next)
	}
	return res, nil
}

// apply returns the new metadata (nil: unchanged) and the result for the proposer.
func (s *controllerSM) apply(cmd *command) (*Metadata, sm.Result) {
	md := s.md
	switch cmd.Op {
	case opBootstrap:
		if md.ClusterID != "" || cmd.ClusterID == "" {
			return nil, sm.Result{}
		}
		next := *md
		next.ClusterID = cmd.ClusterID
		return &next, sm.Result{}

	case opRegisterBroker:
		if cmd.Broker == nil {
			return nil, invalid("no broker")
		}
		if old, ok := md.Brokers[cmd.Broker.NodeID]; ok && old == *cmd.Broker {
			return nil, sm.Result{}
		}
		next := *md
		next.Brokers = make(map[int32]BrokerInfo, len(md.Brokers)+1)
		for id, b := range md.Brokers {
			next.Brokers[id] = b
		}
		next.Brokers[cmd.Broker.NodeID] = *cmd.Broker
		return &next, sm.Result{}

	case opCreateTopic:
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
		next.Topics = copyTopics(md.Topics, 1)
		next.Topics[tm.Name] = tm
		if _, ok := md.Deleted[tm.Name]; ok {
			next.Deleted = maps.Clone(md.Deleted)
			delete(next.Deleted, tm.Name)
		}
		data, _ := json.Marshal(tm)
		return &next, sm.Result{Data: data}

	case opDeleteTopic:
		if _, ok := md.Topics[cmd.Name]; !ok {
			return nil, sm.Result{Value: resultUnknownTopic}
		}
		next := *md
		next.Topics = copyTopics(md.Topics, 0)
		delete(next.Topics, cmd.Name)
		next.Deleted = map[string]int64{cmd.Name: cmd.TimeMs}
		for name, at := range md.Deleted {
			if at > cmd.TimeMs-DeletedTopicMemory.Milliseconds() && name != cmd.Name {
				next.Deleted[name] = at
			}
		}
		return &next, sm.Result{}

	case opCreatePartitions:
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
		brokers := sortedBrokerIDs(md.Brokers)
		if cmd.Assignment != nil {
			if len(cmd.Assignment) != int(cmd.Count)-len(old.Partitions) {
				return nil, sm.Result{Value: resultInvalidReplicas, Data: fmt.Appendf(nil,
					"%d replica lists for %d new partitions", len(cmd.Assignment), int(cmd.Count)-len(old.Partitions))}
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
			tm.Partitions = next.assign(parts, brokers, cmd.Count-int32(len(old.Partitions)), rf)
		}
		next.Topics = copyTopics(md.Topics, 0)
		next.Topics[tm.Name] = &tm
		return &next, sm.Result{}

	case opAlterConfig:
		old, ok := md.Topics[cmd.Name]
		if !ok {
			return nil, sm.Result{Value: resultUnknownTopic}
		}
		next := *md
		tm := *old
		tm.Configs = copyConfigs(old.Configs, cmd.Set, cmd.Remove)
		next.Topics = copyTopics(md.Topics, 0)
		next.Topics[tm.Name] = &tm
		return &next, sm.Result{}

	case opAllocateProducerIDs:
		if cmd.N < 1 {
			return nil, invalid("empty producer id block")
		}
		next := *md
		first := md.NextProducerID
		next.NextProducerID += cmd.N
		return &next, sm.Result{Value: resultOK, Data: strconv.AppendInt(nil, first, 10)}

	case opReportLeaders:
		return applyLeaders(md, cmd.Leaders), sm.Result{}

	case opReassign:
		return applyReassign(md, cmd.Name, cmd.Partition, cmd.Replicas)

	case opDeleteRecords:
		old, ok := md.Topics[cmd.Name]
		if !ok {
			return nil, sm.Result{Value: resultUnknownTopic}
		}
		if cmd.Partition < 0 || int(cmd.Partition) >= len(old.Partitions) {
			return nil, sm.Result{Value: resultUnknownPartition}
		}
		if old.Partitions[cmd.Partition].LogStartOffset >= cmd.N {
			return nil, sm.Result{} // never moves back
		}
		next := *md
		tm := *old
		tm.Partitions = append([]PartitionMeta(nil), old.Partitions...)
		tm.Partitions[cmd.Partition].LogStartOffset = cmd.N
		next.Topics = copyTopics(md.Topics, 0)
		next.Topics[tm.Name] = &tm
		return &next, sm.Result{}

	case opReassignDone:
		if len(cmd.Shards) != 1 {
			return nil, invalid("reassign_done needs one shard")
		}
		return applyReassignDone(md, cmd.Shards[0], cmd.Replicas, cmd.Removed), sm.Result{}
	}
	if next, res, ok := applySecurity(md, cmd); ok {
		return next, res
	}
	if next, res, ok := applyQuotas(md, cmd); ok {
		return next, res
	}
	return nil, invalid("unknown op " + cmd.Op)
}

func invalid(why string) sm.Result {
	return sm.Result{Value: resultInvalidRequest, Data: []byte(why)}
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

// checkAssignment is CheckAssignment as a state machine result.
func checkAssignment(md *Metadata, assignment [][]int32, rf int) (sm.Result, bool) {
	if why := md.CheckAssignment(assignment, rf); why != "" {
		return sm.Result{Value: resultInvalidReplicas, Data: []byte(why)}, false
	}
	return sm.Result{}, true
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
			for _, other := range replicas[:j] {
				if other == id {
					return fmt.Sprintf("partition %d lists broker %d twice", i, id)
				}
			}
		}
	}
	return ""
}

func sortedBrokerIDs(m map[int32]BrokerInfo) []int32 {
	ids := make([]int32, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	for i := 1; i < len(ids); i++ { // insertion sort: few brokers, no import
		for j := i; j > 0 && ids[j] < ids[j-1]; j-- {
			ids[j], ids[j-1] = ids[j-1], ids[j]
		}
	}
	return ids
}

func copyTopics(m map[string]*TopicMeta, extra int) map[string]*TopicMeta {
	out := make(map[string]*TopicMeta, len(m)+extra)
	for k, v := range m {
		out[k] = v
	}
	return out
}

func copyConfigs(old, set map[string]string, remove []string) map[string]string {
	out := make(map[string]string, len(old)+len(set))
	for k, v := range old {
		out[k] = v
	}
	for k, v := range set {
		out[k] = v
	}
	for _, k := range remove {
		delete(out, k)
	}
	return out
}

func (s *controllerSM) Lookup(any) (any, error) { return s.md, nil }

// SaveSnapshot writes the whole metadata as JSON (small: brokers, topics, assignments).
func (s *controllerSM) SaveSnapshot(w io.Writer, _ sm.ISnapshotFileCollection, _ <-chan struct{}) error {
	return json.NewEncoder(w).Encode(s.md)
}

func (s *controllerSM) RecoverFromSnapshot(r io.Reader, _ []sm.SnapshotFile, _ <-chan struct{}) error {
	md := emptyMetadata()
	if err := json.NewDecoder(r).Decode(md); err != nil {
		return fmt.Errorf("quorum: controller snapshot: %w", err)
	}
	s.md = md
	s.c.publish(md)
	return nil
}

func (s *controllerSM) Close() error { return nil }

func newClusterID() string {
	var b [16]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func newTopicID() [16]byte {
	var b [16]byte
	for b == [16]byte{} { // Kafka reserves the zero UUID
		rand.Read(b[:])
	}
	return b
}
