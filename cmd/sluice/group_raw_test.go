package main

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestGroupBatchedRequests sends the batched forms directly (kgo sends each at the highest version
// both sides support: FindCoordinator v4 with several keys, OffsetFetch v9 with several groups,
// JoinGroup v9 for static members, LeaveGroup v5 of static members by instance id).
func TestGroupBatchedRequests(t *testing.T) {
	b := startBroker(t)
	b.createTopic("batched", 2, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := b.client()
	adm := kadm.NewClient(cl)

	fc := kmsg.NewPtrFindCoordinatorRequest()
	fc.Version = 4
	fc.CoordinatorKeys = []string{"ga", "gb", "gc"}
	fcr, err := fc.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	if len(fcr.Coordinators) != 3 {
		t.Fatalf("FindCoordinator v4: %d coordinators", len(fcr.Coordinators))
	}
	for _, c := range fcr.Coordinators {
		if c.ErrorCode != 0 || c.NodeID < 0 || c.Port <= 0 {
			t.Fatalf("FindCoordinator v4 %s: %+v", c.Key, c)
		}
	}

	for i, g := range []string{"ga", "gb"} {
		o := kadm.Offsets{}
		o.Add(kadm.Offset{Topic: "batched", Partition: 0, At: int64(10 + i), LeaderEpoch: -1})
		if r, err := adm.CommitOffsets(ctx, g, o); err != nil || r.Error() != nil {
			t.Fatalf("commit %s: %v %v", g, err, r.Error())
		}
	}
	of := kmsg.NewPtrOffsetFetchRequest()
	of.Version = 8
	for _, g := range []string{"ga", "gb", "gc"} {
		rg := kmsg.NewOffsetFetchRequestGroup()
		rg.Group = g
		rt := kmsg.NewOffsetFetchRequestGroupTopic()
		rt.Topic, rt.Partitions = "batched", []int32{0, 1}
		rg.Topics = append(rg.Topics, rt)
		of.Groups = append(of.Groups, rg)
	}
	ofr, err := of.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][2]int64{"ga": {10, -1}, "gb": {11, -1}, "gc": {-1, -1}}
	if len(ofr.Groups) != 3 {
		t.Fatalf("OffsetFetch v8: %d groups", len(ofr.Groups))
	}
	for _, g := range ofr.Groups {
		if g.ErrorCode != 0 || len(g.Topics) != 1 || len(g.Topics[0].Partitions) != 2 {
			t.Fatalf("OffsetFetch v8 group %s: %+v", g.Group, g)
		}
		for _, p := range g.Topics[0].Partitions {
			if p.Offset != want[g.Group][p.Partition] {
				t.Errorf("OffsetFetch v8 %s/%d = %d, want %d", g.Group, p.Partition, p.Offset, want[g.Group][p.Partition])
			}
		}
	}

	// Two static members join (no MEMBER_ID_REQUIRED round trip for static members); both are
	// removed by one LeaveGroup v3+ naming only their instance ids.
	joinStatic := func(inst, memberID string) chan *kmsg.JoinGroupResponse {
		ch := make(chan *kmsg.JoinGroupResponse, 1)
		go func() {
			jr := kmsg.NewPtrJoinGroupRequest()
			jr.Group, jr.ProtocolType, jr.InstanceID, jr.MemberID = "static-g", "consumer", &inst, memberID
			jr.SessionTimeoutMillis, jr.RebalanceTimeoutMillis = 10000, 10000
			p := kmsg.NewJoinGroupRequestProtocol()
			p.Name, p.Metadata = "range", []byte{0}
			jr.Protocols = append(jr.Protocols, p)
			r, err := jr.RequestWith(ctx, cl)
			if err != nil {
				r = kmsg.NewPtrJoinGroupResponse()
				r.ErrorCode = -1
			}
			ch <- r
		}()
		return ch
	}
	j1 := <-joinStatic("i1", "") // alone: the join completes at once
	if j1.ErrorCode != 0 || j1.Generation != 1 || j1.LeaderID != j1.MemberID {
		t.Fatalf("static join i1: %+v", j1)
	}
	sg := kmsg.NewPtrSyncGroupRequest()
	sg.Group, sg.MemberID, sg.Generation, sg.InstanceID = "static-g", j1.MemberID, 1, kmsg.StringPtr("i1")
	if sr, err := sg.RequestWith(ctx, cl); err != nil || sr.ErrorCode != 0 {
		t.Fatalf("sync i1: %v %+v", err, sr)
	}
	j2ch := joinStatic("i2", "") // waits for i1 to rejoin
	deadline := time.Now().Add(10 * time.Second)
	for {
		hb := kmsg.NewPtrHeartbeatRequest()
		hb.Group, hb.MemberID, hb.Generation, hb.InstanceID = "static-g", j1.MemberID, 1, kmsg.StringPtr("i1")
		hr, err := hb.RequestWith(ctx, cl)
		if err != nil {
			t.Fatal(err)
		}
		if hr.ErrorCode == kerr.RebalanceInProgress.Code {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no REBALANCE_IN_PROGRESS for i1: %v", kerr.ErrorForCode(hr.ErrorCode))
		}
		time.Sleep(20 * time.Millisecond)
	}
	j1again := <-joinStatic("i1", j1.MemberID)
	j2 := <-j2ch
	if j1again.ErrorCode != 0 || j2.ErrorCode != 0 || j2.Generation != 2 || j1again.Generation != 2 {
		t.Fatalf("rebalance with i2: %+v / %+v", j1again, j2)
	}
	lv := kmsg.NewPtrLeaveGroupRequest()
	lv.Version = 3
	lv.Group = "static-g"
	for _, inst := range []string{"i1", "i2", "i3"} {
		m := kmsg.NewLeaveGroupRequestMember()
		m.InstanceID = &inst
		lv.Members = append(lv.Members, m)
	}
	lvr, err := lv.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	if len(lvr.Members) != 3 || lvr.Members[0].ErrorCode != 0 || lvr.Members[1].ErrorCode != 0 || lvr.Members[2].ErrorCode != kerr.UnknownMemberID.Code {
		t.Fatalf("LeaveGroup v3: %+v", lvr.Members)
	}
	dg, err := adm.DescribeGroups(ctx, "static-g")
	if err != nil {
		t.Fatal(err)
	}
	if g := dg["static-g"]; g.State != "Empty" || len(g.Members) != 0 {
		t.Fatalf("after batched leave: %s with %d members", g.State, len(g.Members))
	}
}
