package group

import (
	"context"
	"encoding/binary"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Transactional offset commits (TxnOffsetCommit) are written to __consumer_offsets as transactional
// batches of the producer and stay pending until the transaction's marker reaches that partition:
// a commit marker makes them the group's committed offsets, an abort drops them. Replay does the
// same from the log, so pending offsets survive a take-over.

// TxnStore is the Store of a coordinator that serves transactions: AppendTxn writes recs as a
// transactional batch of producer pid at epoch.
type TxnStore interface {
	AppendTxn(ctx context.Context, group string, pid int64, epoch int16, recs []Record) error
}

// TxnOffsetCommit validates the committer like OffsetCommit (KIP-447: generation and member id when
// given), writes the offsets as part of the producer's transaction and keeps them pending.
func (c *Coordinator) TxnOffsetCommit(ctx context.Context, req *kmsg.TxnOffsetCommitRequest) *kmsg.TxnOffsetCommitResponse {
	resp := req.ResponseKind().(*kmsg.TxnOffsetCommitResponse)
	answer := func(codeFor func(p kmsg.TxnOffsetCommitRequestTopicPartition) int16) *kmsg.TxnOffsetCommitResponse {
		resp.Topics = resp.Topics[:0]
		for _, t := range req.Topics {
			rt := kmsg.NewTxnOffsetCommitResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewTxnOffsetCommitResponseTopicPartition()
				rp.Partition, rp.ErrorCode = p.Partition, codeFor(p)
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		return resp
	}
	all := func(code int16) *kmsg.TxnOffsetCommitResponse {
		return answer(func(kmsg.TxnOffsetCommitRequestTopicPartition) int16 { return code })
	}
	ts, ok := c.store.(TxnStore)
	if !ok {
		return all(kerr.UnsupportedVersion.Code)
	}
	if req.Group == "" {
		return all(kerr.InvalidGroupID.Code)
	}
	c.mu.Lock()
	g := c.groups[req.Group]
	var errc int16
	if req.Generation >= 0 || req.MemberID != "" {
		if g == nil {
			errc = kerr.IllegalGeneration.Code
		} else {
			errc = g.committerError(req.InstanceID, req.MemberID, req.Generation)
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
			if req.Version < 2 {
				le = -1
			}
			oc.add(t.Topic, p.Partition, p.Offset, le, p.Metadata)
		}
	}
	var werr int16
	if len(oc.recs) > 0 {
		if err := ts.AppendTxn(ctx, req.Group, req.ProducerID, req.ProducerEpoch, oc.recs); err != nil {
			werr = storeError(err)
		} else {
			c.mu.Lock()
			pend := c.pendingLocked(req.Group, req.ProducerID)
			for tp, o := range oc.vals {
				pend[tp] = o
			}
			c.mu.Unlock()
		}
	}
	return answer(func(p kmsg.TxnOffsetCommitRequestTopicPartition) int16 {
		if metadataTooLarge(p.Metadata) {
			return kerr.OffsetMetadataTooLarge.Code
		}
		return werr
	})
}

func (c *Coordinator) pendingLocked(group string, pid int64) map[topicPartition]Offset {
	if c.txn == nil {
		c.txn = map[string]map[int64]map[topicPartition]Offset{}
	}
	byPID := c.txn[group]
	if byPID == nil {
		byPID = map[int64]map[topicPartition]Offset{}
		c.txn[group] = byPID
	}
	pend := byPID[pid]
	if pend == nil {
		pend = map[topicPartition]Offset{}
		byPID[pid] = pend
	}
	return pend
}

// CompleteTxn applies producer pid's marker to the groups for which inPartition is true (the groups
// of the __consumer_offsets partition the marker was written to).
func (c *Coordinator) CompleteTxn(pid int64, commit bool, inPartition func(group string) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.completeTxnLocked(pid, commit, inPartition)
}

func (c *Coordinator) completeTxnLocked(pid int64, commit bool, inPartition func(group string) bool) {
	for gid, byPID := range c.txn {
		pend, ok := byPID[pid]
		if !ok || !inPartition(gid) {
			continue
		}
		if commit {
			g := c.getOrCreate(gid)
			for k, o := range pend {
				g.setOffset(k.topic, k.partition, o)
			}
		}
		delete(byPID, pid)
		if len(byPID) == 0 {
			delete(c.txn, gid)
		}
	}
}

// PendingTxnOffset reports whether an open transaction holds an offset of the group's partition
// (OffsetFetch with RequireStable answers UNSTABLE_OFFSET_COMMIT then, KIP-447).
func (c *Coordinator) PendingTxnOffset(group, topic string, partition int32) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, pend := range c.txn[group] {
		if _, ok := pend[topicPartition{topic, partition}]; ok {
			return true
		}
	}
	return false
}

func (c *Coordinator) replayTxnLocked(pid int64, r Record) {
	var k kmsg.OffsetCommitKey
	if len(r.Key) < 2 || binary.BigEndian.Uint16(r.Key) > 1 || k.ReadFrom(r.Key) != nil || r.Value == nil {
		return
	}
	if o, ok := decodeOffsetValue(r.Value); ok {
		c.pendingLocked(k.Group, pid)[topicPartition{k.Topic, k.Partition}] = o
	}
}
