// Package group is the consumer-group coordinator: membership of the classic group protocol (join,
// sync, heartbeat, leave, rebalances with client-side assignors, static membership, session and
// rebalance timeouts, fencing by generation and member id) and committed offsets. It speaks in
// franz-go's kmsg request and response types but knows nothing of sockets; durability goes through a
// Store (the broker appends to __consumer_offsets), and state is rebuilt with Replay.
package group

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"sort"
	"strings"
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
	MinSessionTimeout time.Duration // group.min.session.timeout.ms (Kafka 6 s; default here 1 s)
	MaxSessionTimeout time.Duration // group.max.session.timeout.ms (30 min)
	// OffsetsRetention is offsets.retention.minutes: offsets of a group that has been empty this long
	// expire (7 days).
	OffsetsRetention time.Duration
	// Tick is how often session and rebalance deadlines are checked (100 ms).
	Tick time.Duration
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
		cfg.MinSessionTimeout = time.Second
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

func newMemberID(clientID string) string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	if clientID == "" {
		clientID = "member"
	}
	return clientID + "-" + hex.EncodeToString(b[:])
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

// JoinGroup adds or refreshes a member and waits until the rebalance it is part of completes (or ctx
// ends).
func (c *Coordinator) JoinGroup(ctx context.Context, req *kmsg.JoinGroupRequest, clientID, clientHost string) *kmsg.JoinGroupResponse {
	resp := req.ResponseKind().(*kmsg.JoinGroupResponse)
	resp.Generation = -1
	fail := func(e *kerr.Error) *kmsg.JoinGroupResponse { resp.ErrorCode = code(e); return resp }
	session := time.Duration(req.SessionTimeoutMillis) * time.Millisecond
	rebalance := time.Duration(req.RebalanceTimeoutMillis) * time.Millisecond
	if req.Version == 0 || rebalance <= 0 {
		rebalance = session
	}
	switch {
	case req.Group == "":
		return fail(kerr.InvalidGroupID)
	case session < c.cfg.MinSessionTimeout || session > c.cfg.MaxSessionTimeout:
		return fail(kerr.InvalidSessionTimeout)
	case req.ProtocolType == "" || len(req.Protocols) == 0:
		return fail(kerr.InconsistentGroupProtocol)
	}

	c.mu.Lock()
	g := c.getOrCreate(req.Group)
	if len(g.members) > 0 && (g.protocolType != req.ProtocolType || !supportsCommon(g, req.Protocols)) {
		c.mu.Unlock()
		return fail(kerr.InconsistentGroupProtocol)
	}
	now := time.Now()
	var m *member
	switch {
	case req.MemberID == "" && req.InstanceID != nil:
		old := g.members[g.static[*req.InstanceID]]
		m = &member{id: newMemberID(clientID), instanceID: req.InstanceID}
		if old != nil {
			// A static member restarted: the new id replaces (fences) the old one, keeping its place.
			m.assignment = old.assignment
			delete(g.members, old.id)
			if old.join != nil {
				old.join <- joinError(old.joinVersion, old.id, kerr.FencedInstanceID)
			}
			if old.sync != nil {
				old.sync <- syncError(old.syncVersion, kerr.FencedInstanceID)
			}
			if g.leader == old.id {
				g.leader = m.id
			}
			if g.state == stateStable && protocolsEqual(old.protocols, req.Protocols) {
				m.fill(req, clientID, clientHost, session, rebalance, now)
				g.members[m.id] = m
				g.static[*req.InstanceID] = m.id
				r := c.joinResponse(g, m, req.Version)
				c.mu.Unlock()
				return r
			}
		}
		g.static[*req.InstanceID] = m.id
	case req.MemberID == "" && req.Version >= 4:
		// KIP-394: hand out an id and make the client come back with it.
		id := newMemberID(clientID)
		g.pending[id] = now.Add(session)
		c.mu.Unlock()
		resp.MemberID = id
		return fail(kerr.MemberIDRequired)
	case req.MemberID == "":
		m = &member{id: newMemberID(clientID)}
	default:
		if g.fenced(req.InstanceID, req.MemberID) {
			c.mu.Unlock()
			return fail(kerr.FencedInstanceID)
		}
		m = g.members[req.MemberID]
		if m == nil {
			if _, ok := g.pending[req.MemberID]; !ok {
				c.mu.Unlock()
				resp.MemberID = req.MemberID
				return fail(kerr.UnknownMemberID)
			}
			delete(g.pending, req.MemberID)
			m = &member{id: req.MemberID, instanceID: req.InstanceID}
			if req.InstanceID != nil {
				g.static[*req.InstanceID] = m.id
			}
		} else if (g.state == stateStable && g.leader != m.id || g.state == stateCompleting) && protocolsEqual(m.protocols, req.Protocols) {
			// Nothing changed: the member gets the current generation again, no rebalance.
			m.fill(req, clientID, clientHost, session, rebalance, now)
			r := c.joinResponse(g, m, req.Version)
			c.mu.Unlock()
			return r
		}
	}
	if len(g.members) == 0 {
		g.protocolType = req.ProtocolType
	}
	m.fill(req, clientID, clientHost, session, rebalance, now)
	if m.join != nil {
		m.join <- joinError(m.joinVersion, m.id, kerr.RebalanceInProgress)
	}
	ch := make(chan *kmsg.JoinGroupResponse, 1)
	m.join, m.joinVersion = ch, req.Version
	g.members[m.id] = m
	if g.state != statePreparing {
		c.prepareRebalance(g, now)
	}
	c.checkJoined(g, now)
	c.mu.Unlock()

	select {
	case r := <-ch:
		return r
	case <-ctx.Done():
		return fail(kerr.CoordinatorNotAvailable)
	}
}

func (m *member) fill(req *kmsg.JoinGroupRequest, clientID, clientHost string, session, rebalance time.Duration, now time.Time) {
	m.clientID, m.clientHost = clientID, clientHost
	// Byte fields of a decoded request point into its frame, which is reused once answered: copy.
	m.protocols = make([]kmsg.JoinGroupRequestProtocol, len(req.Protocols))
	for i, p := range req.Protocols {
		m.protocols[i] = kmsg.JoinGroupRequestProtocol{Name: p.Name, Metadata: bytes.Clone(p.Metadata)}
	}
	m.session, m.rebalance = session, rebalance
	m.lastSeen = now
}

func joinError(version int16, memberID string, e *kerr.Error) *kmsg.JoinGroupResponse {
	r := kmsg.NewPtrJoinGroupResponse()
	r.Version = version
	r.ErrorCode = e.Code
	r.Generation = -1
	r.MemberID = memberID
	return r
}

func syncError(version int16, e *kerr.Error) *kmsg.SyncGroupResponse {
	r := kmsg.NewPtrSyncGroupResponse()
	r.Version = version
	r.ErrorCode = e.Code
	return r
}

func protocolsEqual(a, b []kmsg.JoinGroupRequestProtocol) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Name != b[i].Name || string(a[i].Metadata) != string(b[i].Metadata) {
			return false
		}
	}
	return true
}

// supportsCommon is true when some protocol of ps is supported by every current member.
func supportsCommon(g *group, ps []kmsg.JoinGroupRequestProtocol) bool {
	for _, p := range ps {
		all := true
		for _, m := range g.members {
			if !m.supports(p.Name) {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}

func (m *member) supports(name string) bool {
	for _, p := range m.protocols {
		if p.Name == name {
			return true
		}
	}
	return false
}

func (m *member) metadata(protocol string) []byte {
	for _, p := range m.protocols {
		if p.Name == protocol {
			return p.Metadata
		}
	}
	return nil
}

// joinResponse is the current generation as member m sees it (the leader gets every member).
func (c *Coordinator) joinResponse(g *group, m *member, version int16) *kmsg.JoinGroupResponse {
	r := kmsg.NewPtrJoinGroupResponse()
	r.Version = version
	r.Generation = g.generation
	pt, p := g.protocolType, g.protocol
	r.ProtocolType, r.Protocol = &pt, &p
	r.LeaderID = g.leader
	r.MemberID = m.id
	if m.id == g.leader {
		ids := make([]string, 0, len(g.members))
		for id := range g.members {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for _, id := range ids {
			o := g.members[id]
			jm := kmsg.NewJoinGroupResponseMember()
			jm.MemberID, jm.InstanceID, jm.ProtocolMetadata = o.id, o.instanceID, o.metadata(g.protocol)
			r.Members = append(r.Members, jm)
		}
	}
	return r
}

// prepareRebalance starts a rebalance: members must rejoin before the largest rebalance timeout.
func (c *Coordinator) prepareRebalance(g *group, now time.Time) {
	if g.state == stateCompleting {
		for _, m := range g.members {
			if m.sync != nil {
				m.sync <- syncError(m.syncVersion, kerr.RebalanceInProgress)
				m.sync = nil
			}
		}
	}
	g.state = statePreparing
	var longest time.Duration
	for _, m := range g.members {
		longest = max(longest, m.rebalance)
	}
	g.deadline = now.Add(longest)
}

// checkJoined completes the join phase once every member has rejoined.
func (c *Coordinator) checkJoined(g *group, now time.Time) {
	if g.state != statePreparing {
		return
	}
	for _, m := range g.members {
		if m.join == nil {
			return
		}
	}
	c.completeJoin(g, now)
}

// completeJoin drops members that did not rejoin, starts the next generation and answers the joins.
func (c *Coordinator) completeJoin(g *group, now time.Time) {
	for id, m := range g.members {
		if m.join == nil {
			c.dropMember(g, id)
		}
	}
	g.generation++
	if len(g.members) == 0 {
		g.state, g.protocol, g.leader, g.emptySince = stateEmpty, "", "", now
		return
	}
	g.protocol = chooseProtocol(g)
	if _, ok := g.members[g.leader]; !ok {
		ids := make([]string, 0, len(g.members))
		for id := range g.members {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		g.leader = ids[0]
	}
	g.state = stateCompleting
	var longest time.Duration
	for _, m := range g.members {
		longest = max(longest, m.rebalance)
	}
	g.deadline = now.Add(longest) // members that do not sync by then are dropped
	for _, m := range g.members {
		m.assignment = nil
		m.lastSeen = now
		m.join <- c.joinResponse(g, m, m.joinVersion)
		m.join = nil
	}
}

// chooseProtocol picks, among the protocols every member supports, the one most members prefer.
func chooseProtocol(g *group) string {
	ids := make([]string, 0, len(g.members))
	for id := range g.members {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	votes := map[string]int{}
	var order []string
	for _, id := range ids {
		for _, p := range g.members[id].protocols {
			all := true
			for _, o := range g.members {
				if !o.supports(p.Name) {
					all = false
					break
				}
			}
			if all {
				if _, seen := votes[p.Name]; !seen {
					order = append(order, p.Name)
				}
				votes[p.Name]++
				break
			}
		}
	}
	best := ""
	for _, name := range order {
		if best == "" || votes[name] > votes[best] {
			best = name
		}
	}
	return best
}

// dropMember removes a member, answering its waiting requests.
func (c *Coordinator) dropMember(g *group, id string) {
	m := g.members[id]
	if m == nil {
		return
	}
	delete(g.members, id)
	if m.instanceID != nil && g.static[*m.instanceID] == id {
		delete(g.static, *m.instanceID)
	}
	if m.join != nil {
		m.join <- joinError(m.joinVersion, id, kerr.UnknownMemberID)
		m.join = nil
	}
	if m.sync != nil {
		m.sync <- syncError(m.syncVersion, kerr.UnknownMemberID)
		m.sync = nil
	}
}

// removeMembers drops members that left or expired and rebalances the rest.
func (c *Coordinator) removeMembers(g *group, ids []string, now time.Time) {
	for _, id := range ids {
		c.dropMember(g, id)
	}
	switch g.state {
	case stateStable, stateCompleting:
		c.prepareRebalance(g, now)
	}
	c.checkJoined(g, now)
}

// SyncGroup takes the leader's assignment and hands each member its own.
func (c *Coordinator) SyncGroup(ctx context.Context, req *kmsg.SyncGroupRequest) *kmsg.SyncGroupResponse {
	resp := req.ResponseKind().(*kmsg.SyncGroupResponse)
	fail := func(e *kerr.Error) *kmsg.SyncGroupResponse { resp.ErrorCode = e.Code; return resp }
	c.mu.Lock()
	g := c.groups[req.Group]
	if g == nil {
		c.mu.Unlock()
		return fail(kerr.UnknownMemberID)
	}
	if g.fenced(req.InstanceID, req.MemberID) {
		c.mu.Unlock()
		return fail(kerr.FencedInstanceID)
	}
	m := g.members[req.MemberID]
	switch {
	case m == nil:
		c.mu.Unlock()
		return fail(kerr.UnknownMemberID)
	case req.Generation != g.generation:
		c.mu.Unlock()
		return fail(kerr.IllegalGeneration)
	case req.ProtocolType != nil && *req.ProtocolType != g.protocolType, req.Protocol != nil && *req.Protocol != g.protocol:
		c.mu.Unlock()
		return fail(kerr.InconsistentGroupProtocol)
	}
	m.lastSeen = time.Now()
	switch g.state {
	case statePreparing:
		c.mu.Unlock()
		return fail(kerr.RebalanceInProgress)
	case stateStable:
		r := c.syncResponse(g, m, req.Version)
		c.mu.Unlock()
		return r
	}
	// Completing: the leader's assignment completes the generation; followers wait for it.
	if m.sync != nil {
		m.sync <- syncError(m.syncVersion, kerr.RebalanceInProgress)
	}
	ch := make(chan *kmsg.SyncGroupResponse, 1)
	m.sync, m.syncVersion = ch, req.Version
	if req.MemberID == g.leader {
		for _, a := range req.GroupAssignment {
			if o := g.members[a.MemberID]; o != nil {
				o.assignment = bytes.Clone(a.MemberAssignment) // the request's frame is reused
			}
		}
		g.state = stateStable
		for _, o := range g.members {
			if o.sync != nil {
				o.sync <- c.syncResponse(g, o, o.syncVersion)
				o.sync = nil
			}
		}
	}
	c.mu.Unlock()
	select {
	case r := <-ch:
		return r
	case <-ctx.Done():
		return fail(kerr.CoordinatorNotAvailable)
	}
}

func (c *Coordinator) syncResponse(g *group, m *member, version int16) *kmsg.SyncGroupResponse {
	r := kmsg.NewPtrSyncGroupResponse()
	r.Version = version
	pt, p := g.protocolType, g.protocol
	r.ProtocolType, r.Protocol = &pt, &p
	r.MemberAssignment = m.assignment
	if r.MemberAssignment == nil {
		r.MemberAssignment = []byte{}
	}
	return r
}

// Heartbeat keeps a member alive and tells it when a rebalance is under way.
func (c *Coordinator) Heartbeat(req *kmsg.HeartbeatRequest) *kmsg.HeartbeatResponse {
	resp := req.ResponseKind().(*kmsg.HeartbeatResponse)
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.groups[req.Group]
	var m *member
	if g != nil {
		m = g.members[req.MemberID]
	}
	switch {
	case g != nil && g.fenced(req.InstanceID, req.MemberID):
		resp.ErrorCode = kerr.FencedInstanceID.Code
	case m == nil:
		resp.ErrorCode = kerr.UnknownMemberID.Code
	case req.Generation != g.generation:
		resp.ErrorCode = kerr.IllegalGeneration.Code
	default:
		m.lastSeen = time.Now()
		if g.state == statePreparing {
			resp.ErrorCode = kerr.RebalanceInProgress.Code
		}
	}
	return resp
}

// LeaveGroup removes members (one before v3, a batch with static instance ids from v3).
func (c *Coordinator) LeaveGroup(req *kmsg.LeaveGroupRequest) *kmsg.LeaveGroupResponse {
	resp := req.ResponseKind().(*kmsg.LeaveGroupResponse)
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.groups[req.Group]
	if req.Version < 3 {
		if g == nil || g.members[req.MemberID] == nil {
			resp.ErrorCode = kerr.UnknownMemberID.Code
			return resp
		}
		c.removeMembers(g, []string{req.MemberID}, time.Now())
		return resp
	}
	var gone []string
	for _, lm := range req.Members {
		rm := kmsg.NewLeaveGroupResponseMember()
		rm.MemberID, rm.InstanceID = lm.MemberID, lm.InstanceID
		id := lm.MemberID
		switch {
		case g == nil:
			rm.ErrorCode = kerr.UnknownMemberID.Code
		case lm.InstanceID != nil:
			cur, ok := g.static[*lm.InstanceID]
			switch {
			case !ok:
				rm.ErrorCode = kerr.UnknownMemberID.Code
			case id != "" && id != cur:
				rm.ErrorCode = kerr.FencedInstanceID.Code
			default:
				gone = append(gone, cur)
			}
		case g.members[id] == nil:
			rm.ErrorCode = kerr.UnknownMemberID.Code
		default:
			gone = append(gone, id)
		}
		resp.Members = append(resp.Members, rm)
	}
	if g != nil && len(gone) > 0 {
		c.removeMembers(g, gone, time.Now())
	}
	return resp
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

// expireOffsets deletes (with tombstones) offsets of groups that have been empty longer than the
// retention, as Kafka does with offsets.retention.minutes.
func (c *Coordinator) expireOffsets(now time.Time) {
	type exp struct {
		group string
		recs  []Record
	}
	var todo []exp
	c.mu.Lock()
	for _, g := range c.groups {
		if g.state != stateEmpty || now.Sub(g.emptySince) < c.cfg.OffsetsRetention {
			continue
		}
		var recs []Record
		for t, ps := range g.offsets {
			for p, o := range ps {
				if now.Sub(o.CommitTime) >= c.cfg.OffsetsRetention {
					recs = append(recs, Record{Key: offsetKey(g.id, t, p)})
				}
			}
		}
		if len(recs) > 0 {
			todo = append(todo, exp{g.id, recs})
		}
	}
	c.mu.Unlock()
	for _, e := range todo {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := c.store.Append(ctx, e.group, e.recs); err == nil {
			c.mu.Lock()
			for _, r := range e.recs {
				c.replayLocked(r)
			}
			c.mu.Unlock()
		}
		cancel()
	}
}

// storeError turns a Store error into the code of a commit's answer.
func storeError(err error) int16 {
	var ke *kerr.Error
	if errors.As(err, &ke) {
		return ke.Code
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return kerr.RequestTimedOut.Code
	}
	return kerr.UnknownServerError.Code
}

// OffsetCommit validates the committer (members by generation; standalone consumers with generation
// -1 while the group has no members), writes the offsets through the Store and answers after that.
func (c *Coordinator) OffsetCommit(ctx context.Context, req *kmsg.OffsetCommitRequest) *kmsg.OffsetCommitResponse {
	resp := req.ResponseKind().(*kmsg.OffsetCommitResponse)
	answer := func(codeFor func(p kmsg.OffsetCommitRequestTopicPartition) int16) *kmsg.OffsetCommitResponse {
		resp.Topics = resp.Topics[:0]
		for _, t := range req.Topics {
			rt := kmsg.NewOffsetCommitResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewOffsetCommitResponseTopicPartition()
				rp.Partition = p.Partition
				rp.ErrorCode = codeFor(p)
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		return resp
	}
	all := func(code int16) *kmsg.OffsetCommitResponse {
		return answer(func(kmsg.OffsetCommitRequestTopicPartition) int16 { return code })
	}
	if req.Group == "" {
		return all(kerr.InvalidGroupID.Code)
	}
	c.mu.Lock()
	g := c.groups[req.Group]
	standalone := req.Version == 0 || req.Generation < 0 && req.MemberID == ""
	var errc int16
	switch {
	case standalone:
		if g != nil && len(g.members) > 0 {
			errc = kerr.UnknownMemberID.Code
		}
	case g == nil:
		errc = kerr.UnknownMemberID.Code
	default:
		if errc = g.committerError(req.InstanceID, req.MemberID, req.Generation); errc == 0 {
			g.members[req.MemberID].lastSeen = time.Now()
		}
	}
	c.mu.Unlock()
	if errc != 0 {
		return all(errc)
	}

	oc := newOffsetCommits(req.Group)
	for _, t := range req.Topics {
		for _, p := range t.Partitions {
			le := p.LeaderEpoch
			if req.Version < 6 {
				le = -1
			}
			oc.add(t.Topic, p.Partition, p.Offset, le, p.Metadata)
		}
	}
	var werr int16
	if len(oc.recs) > 0 {
		if err := c.store.Append(ctx, req.Group, oc.recs); err != nil {
			werr = storeError(err)
		} else {
			c.mu.Lock()
			g := c.getOrCreate(req.Group)
			for tp, o := range oc.vals {
				g.setOffset(tp.topic, tp.partition, o)
			}
			c.mu.Unlock()
		}
	}
	return answer(func(p kmsg.OffsetCommitRequestTopicPartition) int16 {
		if metadataTooLarge(p.Metadata) {
			return kerr.OffsetMetadataTooLarge.Code
		}
		return werr
	})
}

func (g *group) setOffset(topic string, partition int32, o Offset) {
	ps := g.offsets[topic]
	if ps == nil {
		ps = map[int32]Offset{}
		g.offsets[topic] = ps
	}
	ps[partition] = o
}

// FetchOffsets returns a group's committed offsets: the given topics' partitions (nil: every
// committed one), -1 where nothing is committed.
func (c *Coordinator) FetchOffsets(groupID string, topics map[string][]int32) map[string]map[int32]Offset {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]map[int32]Offset{}
	g := c.groups[groupID]
	if topics == nil {
		if g == nil {
			return out
		}
		for t, ps := range g.offsets {
			m := make(map[int32]Offset, len(ps))
			for p, o := range ps {
				m[p] = o
			}
			out[t] = m
		}
		return out
	}
	for t, ps := range topics {
		m := map[int32]Offset{}
		for _, p := range ps {
			o, ok := Offset{}, false
			if g != nil {
				o, ok = g.offsets[t][p]
			}
			if !ok {
				o = Offset{Offset: -1, LeaderEpoch: -1}
			}
			m[p] = o
		}
		out[t] = m
	}
	return out
}

// OffsetFetch answers one group of an OffsetFetch request.
func (c *Coordinator) OffsetFetch(groupID string, req []kmsg.OffsetFetchRequestTopic) []kmsg.OffsetFetchResponseTopic {
	var want map[string][]int32
	if req != nil {
		want = map[string][]int32{}
		for _, t := range req {
			want[t.Topic] = append(want[t.Topic], t.Partitions...)
		}
	}
	got := c.FetchOffsets(groupID, want)
	names := make([]string, 0, len(got))
	for t := range got {
		names = append(names, t)
	}
	sort.Strings(names)
	var out []kmsg.OffsetFetchResponseTopic
	for _, t := range names {
		rt := kmsg.NewOffsetFetchResponseTopic()
		rt.Topic = t
		ps := make([]int32, 0, len(got[t]))
		for p := range got[t] {
			ps = append(ps, p)
		}
		sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
		for _, p := range ps {
			o := got[t][p]
			rp := kmsg.NewOffsetFetchResponseTopicPartition()
			rp.Partition, rp.Offset, rp.LeaderEpoch = p, o.Offset, o.LeaderEpoch
			md := o.Metadata
			rp.Metadata = &md
			rt.Partitions = append(rt.Partitions, rp)
		}
		out = append(out, rt)
	}
	return out
}

// ListGroups lists groups, filtered by state names (case-insensitive) when states is non-empty.
func (c *Coordinator) ListGroups(states []string) []kmsg.ListGroupsResponseGroup {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []kmsg.ListGroupsResponseGroup
	for _, g := range c.groups {
		st := g.state.String()
		if len(states) > 0 {
			ok := false
			for _, s := range states {
				ok = ok || strings.EqualFold(s, st)
			}
			if !ok {
				continue
			}
		}
		lg := kmsg.NewListGroupsResponseGroup()
		lg.Group, lg.ProtocolType, lg.GroupState, lg.GroupType = g.id, g.protocolType, st, "classic"
		out = append(out, lg)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Group < out[j].Group })
	return out
}

// DescribeGroup describes one group; an unknown group is "Dead" with no error, as in Kafka.
func (c *Coordinator) DescribeGroup(id string) kmsg.DescribeGroupsResponseGroup {
	c.mu.Lock()
	defer c.mu.Unlock()
	dg := kmsg.NewDescribeGroupsResponseGroup()
	dg.Group = id
	g := c.groups[id]
	if g == nil {
		dg.State = "Dead"
		return dg
	}
	dg.State, dg.ProtocolType, dg.Protocol = g.state.String(), g.protocolType, g.protocol
	ids := make([]string, 0, len(g.members))
	for mid := range g.members {
		ids = append(ids, mid)
	}
	sort.Strings(ids)
	for _, mid := range ids {
		m := g.members[mid]
		dm := kmsg.NewDescribeGroupsResponseGroupMember()
		dm.MemberID, dm.InstanceID, dm.ClientID, dm.ClientHost = m.id, m.instanceID, m.clientID, m.clientHost
		dm.ProtocolMetadata = m.metadata(g.protocol)
		if g.state == stateStable {
			dm.MemberAssignment = m.assignment
		}
		dg.Members = append(dg.Members, dm)
	}
	return dg
}

// DeleteGroup deletes an empty group and its offsets.
func (c *Coordinator) DeleteGroup(ctx context.Context, id string) int16 {
	c.mu.Lock()
	g := c.groups[id]
	switch {
	case g == nil:
		c.mu.Unlock()
		return kerr.GroupIDNotFound.Code
	case len(g.members) > 0:
		c.mu.Unlock()
		return kerr.NonEmptyGroup.Code
	}
	var recs []Record
	for t, ps := range g.offsets {
		for p := range ps {
			recs = append(recs, Record{Key: offsetKey(id, t, p)})
		}
	}
	gk := kmsg.NewGroupMetadataKey()
	gk.Version = 2
	gk.Group = id
	recs = append(recs, Record{Key: gk.AppendTo(nil)})
	c.mu.Unlock()
	if err := c.store.Append(ctx, id, recs); err != nil {
		return storeError(err)
	}
	c.mu.Lock()
	if g := c.groups[id]; g != nil && len(g.members) == 0 {
		delete(c.groups, id)
	}
	c.mu.Unlock()
	return 0
}

// OffsetDelete deletes committed offsets of partitions the group is not subscribed to.
func (c *Coordinator) OffsetDelete(ctx context.Context, req *kmsg.OffsetDeleteRequest) *kmsg.OffsetDeleteResponse {
	resp := req.ResponseKind().(*kmsg.OffsetDeleteResponse)
	c.mu.Lock()
	g := c.groups[req.Group]
	if g == nil {
		c.mu.Unlock()
		resp.ErrorCode = kerr.GroupIDNotFound.Code
		return resp
	}
	subscribed := map[string]bool{}
	if len(g.members) > 0 {
		if g.protocolType != "consumer" {
			c.mu.Unlock()
			resp.ErrorCode = kerr.NonEmptyGroup.Code
			return resp
		}
		for _, m := range g.members {
			var md kmsg.ConsumerMemberMetadata
			if md.ReadFrom(m.metadata(g.protocol)) == nil {
				for _, t := range md.Topics {
					subscribed[t] = true
				}
			}
		}
	}
	var recs []Record
	for _, t := range req.Topics {
		rt := kmsg.NewOffsetDeleteResponseTopic()
		rt.Topic = t.Topic
		for _, p := range t.Partitions {
			rp := kmsg.NewOffsetDeleteResponseTopicPartition()
			rp.Partition = p.Partition
			if subscribed[t.Topic] {
				rp.ErrorCode = kerr.GroupSubscribedToTopic.Code
			} else if _, ok := g.offsets[t.Topic][p.Partition]; ok {
				recs = append(recs, Record{Key: offsetKey(req.Group, t.Topic, p.Partition)})
			}
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
	}
	c.mu.Unlock()
	if len(recs) == 0 {
		return resp
	}
	if err := c.store.Append(ctx, req.Group, recs); err != nil {
		resp.ErrorCode = storeError(err)
		return resp
	}
	c.mu.Lock()
	for _, r := range recs {
		c.replayLocked(r)
	}
	c.mu.Unlock()
	return resp
}

// Unload forgets the groups for which drop is true (their partition is led elsewhere now or is about
// to be reloaded); members waiting in join or sync are told NOT_COORDINATOR.
func (c *Coordinator) Unload(drop func(group string) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, g := range c.groups {
		if !drop(id) {
			continue
		}
		for _, m := range g.members {
			if m.join != nil {
				m.join <- joinError(m.joinVersion, m.id, kerr.NotCoordinator)
				m.join = nil
			}
			if m.sync != nil {
				m.sync <- syncError(m.syncVersion, kerr.NotCoordinator)
				m.sync = nil
			}
		}
		delete(c.groups, id)
	}
	for id := range c.txn {
		if drop(id) {
			delete(c.txn, id)
		}
	}
}

func (c *Coordinator) replayLocked(r Record) {
	if len(r.Key) < 2 {
		return
	}
	switch binary.BigEndian.Uint16(r.Key) {
	case 0, 1:
		var k kmsg.OffsetCommitKey
		if k.ReadFrom(r.Key) != nil {
			return
		}
		if r.Value == nil {
			g := c.groups[k.Group]
			if g == nil {
				return
			}
			if ps := g.offsets[k.Topic]; ps != nil {
				delete(ps, k.Partition)
				if len(ps) == 0 {
					delete(g.offsets, k.Topic)
				}
			}
			if len(g.offsets) == 0 && len(g.members) == 0 && g.state == stateEmpty {
				delete(c.groups, k.Group)
			}
			return
		}
		var v kmsg.OffsetCommitValue
		if v.ReadFrom(r.Value) != nil {
			return
		}
		le := v.LeaderEpoch
		if v.Version < 3 {
			le = -1
		}
		c.getOrCreate(k.Group).setOffset(k.Topic, k.Partition, Offset{Offset: v.Offset, LeaderEpoch: le, Metadata: v.Metadata, CommitTime: time.UnixMilli(v.CommitTimestamp)})
	case 2:
		var k kmsg.GroupMetadataKey
		if k.ReadFrom(r.Key) != nil {
			return
		}
		if g := c.groups[k.Group]; r.Value == nil && g != nil && len(g.members) == 0 {
			delete(c.groups, k.Group)
		}
	}
}
