package group

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicebroker/sluice/batch"
)

// memStore is a Store that keeps the batches it was given, so a second coordinator can replay them.
type memStore struct {
	mu      sync.Mutex
	batches [][]byte
	fail    error
}

func (s *memStore) Append(_ context.Context, _ string, recs []Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	s.batches = append(s.batches, batch.Encode(recs, time.Now().UnixMilli(), 0, batch.NoProducer))
	return nil
}

func (s *memStore) replayInto(t *testing.T, c *Coordinator) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var buf []byte
	for _, b := range s.batches {
		buf = append(buf, b...)
	}
	next, err := c.ReplayBatches(buf, func(string) bool { return true })
	if err != nil || (len(s.batches) > 0 && next <= 0) {
		t.Fatalf("decode: next %d err %v", next, err)
	}
}

func newCoord(t *testing.T) (*Coordinator, *memStore) {
	s := &memStore{}
	c := New(Config{Tick: 10 * time.Millisecond}, s)
	t.Cleanup(c.Close)
	return c, s
}

func joinReq(version int16, groupID, memberID string, session time.Duration, meta string) *kmsg.JoinGroupRequest {
	r := kmsg.NewPtrJoinGroupRequest()
	r.Version = version
	r.Group, r.MemberID, r.ProtocolType = groupID, memberID, "consumer"
	r.SessionTimeoutMillis = int32(session / time.Millisecond)
	r.RebalanceTimeoutMillis = int32(session / time.Millisecond)
	p := kmsg.NewJoinGroupRequestProtocol()
	p.Name, p.Metadata = "range", []byte(meta)
	r.Protocols = append(r.Protocols, p)
	return r
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func wantCode(t *testing.T, what string, got int16, want *kerr.Error) {
	t.Helper()
	w := int16(0)
	if want != nil {
		w = want.Code
	}
	if got != w {
		t.Fatalf("%s: error %v, want %v", what, kerr.ErrorForCode(got), want)
	}
}

// join does the v4+ two-step join of a new member and returns its response.
func join(t *testing.T, c *Coordinator, groupID string) *kmsg.JoinGroupResponse {
	t.Helper()
	r := c.JoinGroup(ctxT(t), joinReq(9, groupID, "", 10*time.Second, "m"), "client", "/host")
	wantCode(t, "first join", r.ErrorCode, kerr.MemberIDRequired)
	if r.MemberID == "" {
		t.Fatal("MEMBER_ID_REQUIRED without a member id")
	}
	r = c.JoinGroup(ctxT(t), joinReq(9, groupID, r.MemberID, 10*time.Second, "m"), "client", "/host")
	wantCode(t, "second join", r.ErrorCode, nil)
	return r
}

func syncReq(groupID, memberID string, gen int32, assign map[string]string) *kmsg.SyncGroupRequest {
	r := kmsg.NewPtrSyncGroupRequest()
	r.Version = 5
	r.Group, r.MemberID, r.Generation = groupID, memberID, gen
	for m, a := range assign {
		ga := kmsg.NewSyncGroupRequestGroupAssignment()
		ga.MemberID, ga.MemberAssignment = m, []byte(a)
		r.GroupAssignment = append(r.GroupAssignment, ga)
	}
	return r
}

func heartbeat(c *Coordinator, groupID, memberID string, gen int32) int16 {
	r := kmsg.NewPtrHeartbeatRequest()
	r.Version = 4
	r.Group, r.MemberID, r.Generation = groupID, memberID, gen
	return c.Heartbeat(r).ErrorCode
}

func TestJoinSyncRebalanceAndFencing(t *testing.T) {
	c, _ := newCoord(t)
	a := join(t, c, "g")
	if a.Generation != 1 || a.LeaderID != a.MemberID || len(a.Members) != 1 {
		t.Fatalf("first generation: %+v", a)
	}
	s := c.SyncGroup(ctxT(t), syncReq("g", a.MemberID, 1, map[string]string{a.MemberID: "all"}))
	wantCode(t, "sync", s.ErrorCode, nil)
	if string(s.MemberAssignment) != "all" {
		t.Fatalf("assignment %q", s.MemberAssignment)
	}
	wantCode(t, "heartbeat", heartbeat(c, "g", a.MemberID, 1), nil)
	wantCode(t, "heartbeat old generation", heartbeat(c, "g", a.MemberID, 0), kerr.IllegalGeneration)
	wantCode(t, "heartbeat unknown member", heartbeat(c, "g", "nobody", 1), kerr.UnknownMemberID)

	// A second member joins: its join waits until the first rejoins; the first hears of the
	// rebalance from its heartbeat.
	done := make(chan *kmsg.JoinGroupResponse, 1)
	r := c.JoinGroup(ctxT(t), joinReq(9, "g", "", 10*time.Second, "m"), "client", "/host")
	go func() { done <- c.JoinGroup(ctxT(t), joinReq(9, "g", r.MemberID, 10*time.Second, "m"), "c2", "/h2") }()
	deadline := time.Now().Add(5 * time.Second)
	for heartbeat(c, "g", a.MemberID, 1) != kerr.RebalanceInProgress.Code {
		if time.Now().After(deadline) {
			t.Fatal("no REBALANCE_IN_PROGRESS")
		}
		time.Sleep(5 * time.Millisecond)
	}
	ca := kmsg.NewPtrOffsetCommitRequest()
	ca.Version, ca.Group, ca.MemberID, ca.Generation = 8, "g", a.MemberID, 1
	ct := kmsg.NewOffsetCommitRequestTopic()
	ct.Topic = "t"
	cp := kmsg.NewOffsetCommitRequestTopicPartition()
	cp.Partition, cp.Offset = 0, 42
	ct.Partitions = append(ct.Partitions, cp)
	ca.Topics = append(ca.Topics, ct)
	wantCode(t, "commit while preparing", c.OffsetCommit(ctxT(t), ca).Topics[0].Partitions[0].ErrorCode, nil)

	a2 := c.JoinGroup(ctxT(t), joinReq(9, "g", a.MemberID, 10*time.Second, "m"), "client", "/host")
	b2 := <-done
	wantCode(t, "rejoin", a2.ErrorCode, nil)
	wantCode(t, "join b", b2.ErrorCode, nil)
	if a2.Generation != 2 || b2.Generation != 2 || a2.LeaderID != b2.LeaderID {
		t.Fatalf("generation 2: %+v %+v", a2, b2)
	}
	leader, follower := a2, b2
	if b2.LeaderID == b2.MemberID {
		leader, follower = b2, a2
	}
	if len(leader.Members) != 2 || len(follower.Members) != 0 {
		t.Fatalf("leader got %d members, follower %d", len(leader.Members), len(follower.Members))
	}
	wantCode(t, "commit while completing", c.OffsetCommit(ctxT(t), ca).Topics[0].Partitions[0].ErrorCode, kerr.IllegalGeneration)

	fs := make(chan *kmsg.SyncGroupResponse, 1)
	go func() { fs <- c.SyncGroup(ctxT(t), syncReq("g", follower.MemberID, 2, nil)) }()
	ls := c.SyncGroup(ctxT(t), syncReq("g", leader.MemberID, 2, map[string]string{leader.MemberID: "L", follower.MemberID: "F"}))
	if f := <-fs; f.ErrorCode != 0 || string(f.MemberAssignment) != "F" || string(ls.MemberAssignment) != "L" {
		t.Fatalf("sync: follower %+v leader %+v", f, ls)
	}
	wantCode(t, "sync old generation", c.SyncGroup(ctxT(t), syncReq("g", leader.MemberID, 1, nil)).ErrorCode, kerr.IllegalGeneration)

	// Batched leave of both members empties the group.
	lv := kmsg.NewPtrLeaveGroupRequest()
	lv.Version, lv.Group = 5, "g"
	for _, id := range []string{leader.MemberID, follower.MemberID, "ghost"} {
		m := kmsg.NewLeaveGroupRequestMember()
		m.MemberID = id
		lv.Members = append(lv.Members, m)
	}
	lr := c.LeaveGroup(lv)
	wantCode(t, "leave", lr.Members[0].ErrorCode, nil)
	wantCode(t, "leave ghost", lr.Members[2].ErrorCode, kerr.UnknownMemberID)
	if d := c.DescribeGroup("g"); d.State != "Empty" || len(d.Members) != 0 {
		t.Fatalf("after leave: %s with %d members", d.State, len(d.Members))
	}
	got := c.FetchOffsets("g", map[string][]int32{"t": {0, 1}})
	if got["t"][0].Offset != 42 || got["t"][1].Offset != -1 {
		t.Fatalf("offsets %+v", got)
	}
}

func TestSessionExpiry(t *testing.T) {
	c, _ := newCoord(t)
	c.cfg.MinSessionTimeout = 10 * time.Millisecond
	r := c.JoinGroup(ctxT(t), joinReq(2, "g", "", 100*time.Millisecond, "m"), "client", "/host") // v2: no round trip
	wantCode(t, "join v2", r.ErrorCode, nil)
	deadline := time.Now().Add(5 * time.Second)
	for heartbeat(c, "g", r.MemberID, r.Generation) != kerr.UnknownMemberID.Code {
		if time.Now().After(deadline) {
			t.Fatal("member never expired")
		}
		time.Sleep(150 * time.Millisecond) // longer than the session: no heartbeat in time
	}
	if d := c.DescribeGroup("g"); d.State != "Empty" {
		t.Fatalf("state %s after expiry", d.State)
	}
}

func TestStaticMembership(t *testing.T) {
	c, _ := newCoord(t)
	inst := "instance-1"
	req := joinReq(9, "g", "", 10*time.Second, "m")
	req.InstanceID = &inst
	a := c.JoinGroup(ctxT(t), req, "client", "/host") // static members skip MEMBER_ID_REQUIRED
	wantCode(t, "static join", a.ErrorCode, nil)
	wantCode(t, "sync", c.SyncGroup(ctxT(t), syncReq("g", a.MemberID, a.Generation, map[string]string{a.MemberID: "x"})).ErrorCode, nil)

	// The same instance restarts: a new member id replaces the old one, which is fenced.
	b := c.JoinGroup(ctxT(t), req, "client", "/host")
	wantCode(t, "static rejoin", b.ErrorCode, nil)
	if b.MemberID == a.MemberID {
		t.Fatal("static rejoin kept the old member id")
	}
	hb := kmsg.NewPtrHeartbeatRequest()
	hb.Version, hb.Group, hb.MemberID, hb.Generation, hb.InstanceID = 4, "g", a.MemberID, a.Generation, &inst
	wantCode(t, "old instance heartbeat", c.Heartbeat(hb).ErrorCode, kerr.FencedInstanceID)
}

func TestOffsetsReplayAndStandalone(t *testing.T) {
	c, s := newCoord(t)
	commit := kmsg.NewPtrOffsetCommitRequest()
	commit.Version, commit.Group, commit.Generation = 8, "solo", -1
	ct := kmsg.NewOffsetCommitRequestTopic()
	ct.Topic = "t"
	for p := int32(0); p < 3; p++ {
		cp := kmsg.NewOffsetCommitRequestTopicPartition()
		md := "meta"
		cp.Partition, cp.Offset, cp.Metadata, cp.LeaderEpoch = p, int64(10*p+1), &md, 5
		ct.Partitions = append(ct.Partitions, cp)
	}
	commit.Topics = append(commit.Topics, ct)
	for _, p := range c.OffsetCommit(ctxT(t), commit).Topics[0].Partitions {
		wantCode(t, "standalone commit", p.ErrorCode, nil)
	}
	del := kmsg.NewPtrOffsetDeleteRequest()
	del.Group = "solo"
	dt := kmsg.NewOffsetDeleteRequestTopic()
	dt.Topic = "t"
	dp := kmsg.NewOffsetDeleteRequestTopicPartition()
	dp.Partition = 2
	dt.Partitions = append(dt.Partitions, dp)
	del.Topics = append(del.Topics, dt)
	wantCode(t, "offset delete", c.OffsetDelete(ctxT(t), del).ErrorCode, nil)

	// A failing store fails the commit and changes nothing.
	s.fail = kerr.NotCoordinator
	commit.Topics[0].Partitions[0].Offset = 999
	wantCode(t, "commit on failing store", c.OffsetCommit(ctxT(t), commit).Topics[0].Partitions[0].ErrorCode, kerr.NotCoordinator)
	s.fail = nil

	c2, _ := newCoord(t)
	s.replayInto(t, c2)
	got := c2.FetchOffsets("solo", nil)
	if len(got["t"]) != 2 || got["t"][0].Offset != 1 || got["t"][1].Offset != 11 || got["t"][1].Metadata != "meta" || got["t"][1].LeaderEpoch != 5 {
		t.Fatalf("replayed offsets %+v", got)
	}
	wantCode(t, "delete group", int16(c2.DeleteGroup(ctxT(t), "solo")), nil)
	wantCode(t, "delete missing group", c2.DeleteGroup(ctxT(t), "solo"), kerr.GroupIDNotFound)
}

func TestOffsetsExpireFromEmptyGroups(t *testing.T) {
	c, s := newCoord(t)
	c.cfg.OffsetsRetention = time.Hour
	commit := kmsg.NewPtrOffsetCommitRequest()
	commit.Version, commit.Group, commit.Generation = 8, "old", -1
	ct := kmsg.NewOffsetCommitRequestTopic()
	ct.Topic = "t"
	cp := kmsg.NewOffsetCommitRequestTopicPartition()
	cp.Offset = 5
	ct.Partitions = append(ct.Partitions, cp)
	commit.Topics = append(commit.Topics, ct)
	wantCode(t, "commit", c.OffsetCommit(ctxT(t), commit).Topics[0].Partitions[0].ErrorCode, nil)

	c.expireOffsets(time.Now().Add(30 * time.Minute)) // within retention: kept
	if got := c.FetchOffsets("old", nil); len(got["t"]) != 1 {
		t.Fatalf("offset expired early: %+v", got)
	}
	c.expireOffsets(time.Now().Add(2 * time.Hour))
	if got := c.FetchOffsets("old", nil); len(got) != 0 {
		t.Fatalf("offset not expired: %+v", got)
	}
	// The expiry is durable: a replay does not bring the offset back.
	c2, _ := newCoord(t)
	s.replayInto(t, c2)
	if got := c2.FetchOffsets("old", nil); len(got) != 0 {
		t.Fatalf("expired offset back after replay: %+v", got)
	}
}
