package quorum

import (
	"context"
	"errors"
	"fmt"
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

// bootstrap sets the cluster id once a leader exists. Every voter proposes its own random id
// after catching up (so a restart proposes nothing); the first applied wins, the state machine
// ignores the others.
func (c *Controller) bootstrap() {
	for c.Metadata().ClusterID == "" {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := c.catchUp(ctx)
		if err == nil && c.Metadata().ClusterID == "" {
			_, _, err = c.propose(ctx, &bootstrapCmd{ClusterID: newClusterID()})
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

// controllerAttempt bounds one proposal attempt. A proposal forwarded to a leader that has just
// died is lost without an answer, so propose retries after this long (within the caller's ctx).
const controllerAttempt = 2 * time.Second

// propose replicates cmd through the controller group and waits until it is applied here.
// A proposal made on a follower voter is forwarded to the leader by dragonboat's Raft.
// retried reports that an earlier attempt may have been applied already (its answer was lost):
// callers treat "already done" outcomes as success then.
// Observers (non-voting members) propose the same way: dragonboat forwards for them too.
func (c *Controller) propose(ctx context.Context, cmd controllerCommand) (res sm.Result, retried bool, err error) {
	if err := cmd.validate(); err != nil {
		return sm.Result{}, false, err
	}
	data, err := encodeCommand(cmd)
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
