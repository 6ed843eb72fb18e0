// Package group is the consumer-group coordinator: membership of the classic group protocol (join,
// sync, heartbeat, leave, rebalances with client-side assignors, static membership, session and
// rebalance timeouts, fencing by generation and member id) and committed offsets. It speaks in
// franz-go's kmsg request and response types but knows nothing of sockets; durability goes through a
// Store (the broker appends to __consumer_offsets), and state is rebuilt with ReplayBatches.
//
// Files: coordinator.go (the state, timers), membership.go (join, sync, heartbeat, leave,
// rebalances), offsets.go (commits, fetches, deletes, expiry), txn.go (transactional offsets),
// admin.go (list, describe, delete groups), records.go (the records of __consumer_offsets, loading
// and unloading a partition's groups).
package group

import (
	"context"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Store writes records durably to the group's partition of __consumer_offsets, returning once they
// are committed (errors are kerr errors a client acts on, such as NOT_COORDINATOR).
type Store interface {
	Append(ctx context.Context, group string, recs []Record) error
}

// Config tunes the coordinator; zero values take Kafka's defaults.
type Config struct {
	MinSessionTimeout time.Duration // group.min.session.timeout.ms (Kafka's default, 6 s)
	MaxSessionTimeout time.Duration // group.max.session.timeout.ms (30 min)
	// OffsetsRetention is offsets.retention.minutes: offsets of a group that has been empty this long
	// expire (7 days).
	OffsetsRetention time.Duration
	// Tick is how often session and rebalance deadlines are checked (100 ms).
	Tick time.Duration
	// InitialRebalanceDelay is group.initial.rebalance.delay.ms: the first rebalance of an empty group
	// waits this long (again after each new member, up to the rebalance timeout) for more members, so
	// consumers started together share the first generation. 0 = none (the broker passes Kafka's 3 s).
	InitialRebalanceDelay time.Duration
}

// Offset is one committed position.
type Offset struct {
	Offset      int64
	LeaderEpoch int32
	Metadata    string
	CommitTime  time.Time
}

type state int8

const (
	stateEmpty state = iota
	statePreparing
	stateCompleting
	stateStable
)

func (s state) String() string {
	switch s {
	case statePreparing:
		return "PreparingRebalance"
	case stateCompleting:
		return "CompletingRebalance"
	case stateStable:
		return "Stable"
	}
	return "Empty"
}

type member struct {
	id         string
	instanceID *string
	clientID   string
	clientHost string
	protocols  []kmsg.JoinGroupRequestProtocol
	session    time.Duration
	rebalance  time.Duration
	lastSeen   time.Time
	assignment []byte

	join        chan *kmsg.JoinGroupResponse // set while the member waits in JoinGroup
	joinVersion int16
	sync        chan *kmsg.SyncGroupResponse // set while the member waits in SyncGroup
	syncVersion int16
}

type group struct {
	id           string
	state        state
	generation   int32
	protocolType string
	protocol     string
	leader       string
	members      map[string]*member
	static       map[string]string    // instance id -> member id
	pending      map[string]time.Time // member ids handed out with MEMBER_ID_REQUIRED, until they join
	deadline     time.Time            // rebalance deadline while preparing
	holdUntil    time.Time            // the first rebalance of an empty group completes no earlier
	emptySince   time.Time
	offsets      map[string]map[int32]Offset
}

// Coordinator holds every group this node coordinates.
type Coordinator struct {
	cfg   Config
	store Store

	mu     sync.Mutex
	groups map[string]*group
	txn    map[string]map[int64]map[topicPartition]Offset // group -> producer id -> pending transactional offsets

	stop chan struct{}
	done chan struct{}
}

// New starts a coordinator; Close stops its timer goroutine.
func New(cfg Config, store Store) *Coordinator {
	if cfg.MinSessionTimeout <= 0 {
		cfg.MinSessionTimeout = 6 * time.Second
	}
	if cfg.MaxSessionTimeout <= 0 {
		cfg.MaxSessionTimeout = 30 * time.Minute
	}
	if cfg.OffsetsRetention <= 0 {
		cfg.OffsetsRetention = 7 * 24 * time.Hour
	}
	if cfg.Tick <= 0 {
		cfg.Tick = 100 * time.Millisecond
	}
	c := &Coordinator{cfg: cfg, store: store, groups: map[string]*group{}, stop: make(chan struct{}), done: make(chan struct{})}
	go c.timers()
	return c
}

// Close stops the timers; waiting joins and syncs are answered by their callers' contexts.
func (c *Coordinator) Close() {
	close(c.stop)
	<-c.done
}

func (c *Coordinator) getOrCreate(id string) *group {
	g := c.groups[id]
	if g == nil {
		g = &group{id: id, members: map[string]*member{}, static: map[string]string{}, pending: map[string]time.Time{},
			offsets: map[string]map[int32]Offset{}, emptySince: time.Now()}
		c.groups[id] = g
	}
	return g
}

func code(err *kerr.Error) int16 { return err.Code }

// fenced checks a request's static instance id against the member it claims to be.
func (g *group) fenced(instanceID *string, memberID string) bool {
	if instanceID == nil {
		return false
	}
	id, ok := g.static[*instanceID]
	return ok && id != memberID
}

// timers expires sessions, pending member ids and rebalance deadlines, and old offsets of empty groups.
func (c *Coordinator) timers() {
	defer close(c.done)
	t := time.NewTicker(c.cfg.Tick)
	defer t.Stop()
	lastExpiry := time.Now()
	for {
		select {
		case <-c.stop:
			return
		case now := <-t.C:
			c.mu.Lock()
			for _, g := range c.groups {
				var expired []string
				for id, m := range g.members {
					if m.join == nil && m.sync == nil && now.Sub(m.lastSeen) > m.session {
						expired = append(expired, id)
					}
				}
				if len(expired) > 0 {
					c.removeMembers(g, expired, now)
				}
				for id, dl := range g.pending {
					if now.After(dl) {
						delete(g.pending, id)
					}
				}
				switch {
				case g.state == statePreparing && now.After(g.deadline):
					c.completeJoin(g, now)
				case g.state == statePreparing && !g.holdUntil.IsZero() && now.After(g.holdUntil):
					g.holdUntil = time.Time{}
					c.checkJoined(g, now)
				case g.state == stateCompleting && now.After(g.deadline):
					// The leader never sent its assignment, or followers never synced: drop those
					// that did not sync and start over.
					var lost []string
					for id, m := range g.members {
						if m.sync == nil {
							lost = append(lost, id)
						}
					}
					c.removeMembers(g, lost, now)
				}
			}
			c.mu.Unlock()
			if now.Sub(lastExpiry) > time.Minute {
				lastExpiry = now
				c.expireOffsets(now)
			}
		}
	}
}
