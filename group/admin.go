package group

import (
	"context"
	"sort"
	"strings"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Groups as the admin APIs see them: ListGroups, DescribeGroups, DeleteGroups.

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
