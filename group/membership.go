package group

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Membership of the classic group protocol: JoinGroup, SyncGroup, Heartbeat, LeaveGroup, and the
// rebalances they drive (protocol choice, static members, join and sync completion).

func newMemberID(clientID string) string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	if clientID == "" {
		clientID = "member"
	}
	return clientID + "-" + hex.EncodeToString(b[:])
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
	_, known := g.members[m.id]
	g.members[m.id] = m
	switch {
	case g.state == stateEmpty && c.cfg.InitialRebalanceDelay > 0:
		c.prepareRebalance(g, now)
		g.holdUntil = minTime(now.Add(c.cfg.InitialRebalanceDelay), g.deadline)
	case g.state != statePreparing:
		c.prepareRebalance(g, now)
	case !g.holdUntil.IsZero() && !known:
		// Another member of a group still forming: wait for more, within the rebalance timeout.
		g.holdUntil = minTime(now.Add(c.cfg.InitialRebalanceDelay), g.deadline)
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

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// checkJoined completes the join phase once every member has rejoined (and a forming group's initial
// delay has passed).
func (c *Coordinator) checkJoined(g *group, now time.Time) {
	if g.state != statePreparing || !g.holdUntil.IsZero() && now.Before(g.holdUntil) {
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
	g.holdUntil = time.Time{}
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
