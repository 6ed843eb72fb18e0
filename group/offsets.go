package group

import (
	"context"
	"errors"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Committed offsets: OffsetCommit, OffsetFetch, OffsetDelete, and their expiry from empty groups.

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

// AnswerOffsetCommit answers every partition of req, in the request's shape, with codeFor's code.
func AnswerOffsetCommit(req *kmsg.OffsetCommitRequest, codeFor func(topic string, p kmsg.OffsetCommitRequestTopicPartition) int16) *kmsg.OffsetCommitResponse {
	resp := req.ResponseKind().(*kmsg.OffsetCommitResponse)
	for _, t := range req.Topics {
		rt := kmsg.NewOffsetCommitResponseTopic()
		rt.Topic = t.Topic
		for _, p := range t.Partitions {
			rp := kmsg.NewOffsetCommitResponseTopicPartition()
			rp.Partition = p.Partition
			rp.ErrorCode = codeFor(t.Topic, p)
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
	}
	return resp
}

// OffsetCommit validates the committer (members by generation; standalone consumers with generation
// -1 while the group has no members), writes the offsets through the Store and answers after that.
func (c *Coordinator) OffsetCommit(ctx context.Context, req *kmsg.OffsetCommitRequest) *kmsg.OffsetCommitResponse {
	answer := func(codeFor func(p kmsg.OffsetCommitRequestTopicPartition) int16) *kmsg.OffsetCommitResponse {
		return AnswerOffsetCommit(req, func(_ string, p kmsg.OffsetCommitRequestTopicPartition) int16 { return codeFor(p) })
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

// What OffsetCommit and TxnOffsetCommit share: the check of a committer that names a member, and
// turning the request's offsets into records to write and values to apply once written.

// offsetMetadataMax is Kafka's offset.metadata.max.bytes: an offset with more metadata is not
// written and its partition answers OFFSET_METADATA_TOO_LARGE.
const offsetMetadataMax = 4096

func metadataTooLarge(md *string) bool { return md != nil && len(*md) > offsetMetadataMax }

// committerError checks a committer that gives its member id and generation against g (which
// exists): 0, or the error code to answer. Callers hold c.mu.
func (g *group) committerError(instanceID *string, memberID string, generation int32) int16 {
	switch {
	case g.fenced(instanceID, memberID):
		return kerr.FencedInstanceID.Code
	case g.members[memberID] == nil:
		return kerr.UnknownMemberID.Code
	case generation != g.generation:
		return kerr.IllegalGeneration.Code
	case g.state == stateCompleting:
		return kerr.RebalanceInProgress.Code
	}
	return 0
}

// topicPartition names one partition whose offset a group commits.
type topicPartition struct {
	topic     string
	partition int32
}

// offsetCommits gathers one request's offsets of a group: the records to write and the values to
// apply once they are written.
type offsetCommits struct {
	group string
	now   time.Time
	recs  []Record
	vals  map[topicPartition]Offset
}

func newOffsetCommits(group string) *offsetCommits {
	return &offsetCommits{group: group, now: time.Now(), vals: map[topicPartition]Offset{}}
}

// add takes one partition's offset, unless its metadata is too large.
func (oc *offsetCommits) add(topic string, partition int32, offset int64, leaderEpoch int32, metadata *string) {
	if metadataTooLarge(metadata) {
		return
	}
	md := ""
	if metadata != nil {
		md = *metadata
	}
	o := Offset{Offset: offset, LeaderEpoch: leaderEpoch, Metadata: md, CommitTime: oc.now}
	oc.vals[topicPartition{topic, partition}] = o
	oc.recs = append(oc.recs, Record{Key: offsetKey(oc.group, topic, partition), Value: offsetValue(o)})
}
