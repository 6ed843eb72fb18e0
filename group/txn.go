package group

import (
	"context"
	"encoding/binary"
	"hash/crc32"
	"time"

	"github.com/twmb/franz-go/pkg/kbin"
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

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type topicPartition struct {
	topic     string
	partition int32
}

// EncodeTxnBatch is EncodeBatch as a transactional batch of producer pid at epoch (no sequence: the
// partition checks only the epoch of coordinator writes).
func EncodeTxnBatch(recs []Record, now time.Time, pid int64, epoch int16) []byte {
	b := EncodeBatch(recs, now)
	binary.BigEndian.PutUint16(b[21:], 0x10)
	binary.BigEndian.PutUint64(b[43:], uint64(pid))
	binary.BigEndian.PutUint16(b[51:], uint16(epoch))
	binary.BigEndian.PutUint32(b[17:], crc32.Checksum(b[21:], castagnoli))
	return b
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
		switch {
		case g == nil:
			errc = kerr.IllegalGeneration.Code
		case g.fenced(req.InstanceID, req.MemberID):
			errc = kerr.FencedInstanceID.Code
		case g.members[req.MemberID] == nil:
			errc = kerr.UnknownMemberID.Code
		case req.Generation != g.generation:
			errc = kerr.IllegalGeneration.Code
		case g.state == stateCompleting:
			errc = kerr.RebalanceInProgress.Code
		}
	}
	c.mu.Unlock()
	if errc != 0 {
		return all(errc)
	}
	now := time.Now()
	var recs []Record
	vals := map[topicPartition]Offset{}
	for _, t := range req.Topics {
		for _, p := range t.Partitions {
			md := ""
			if p.Metadata != nil {
				md = *p.Metadata
			}
			if len(md) > 4096 {
				continue
			}
			o := Offset{Offset: p.Offset, LeaderEpoch: p.LeaderEpoch, Metadata: md, CommitTime: now}
			if req.Version < 2 {
				o.LeaderEpoch = -1
			}
			vals[topicPartition{t.Topic, p.Partition}] = o
			recs = append(recs, Record{Key: offsetKey(req.Group, t.Topic, p.Partition), Value: offsetValue(o)})
		}
	}
	var werr int16
	if len(recs) > 0 {
		if err := ts.AppendTxn(ctx, req.Group, req.ProducerID, req.ProducerEpoch, recs); err != nil {
			werr = storeError(err)
		} else {
			c.mu.Lock()
			pend := c.pendingLocked(req.Group, req.ProducerID)
			for k, o := range vals {
				pend[k] = o
			}
			c.mu.Unlock()
		}
	}
	return answer(func(p kmsg.TxnOffsetCommitRequestTopicPartition) int16 {
		if p.Metadata != nil && len(*p.Metadata) > 4096 {
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

// ReplayBatches replays the batches of one __consumer_offsets partition read back from its log
// (whole batches back to back), transactional offsets and markers included; inPartition tells the
// groups of that partition. It returns the offset after the last batch (-1 if none).
func (c *Coordinator) ReplayBatches(buf []byte, inPartition func(group string) bool) (next int64, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	next = -1
	for len(buf) >= 61 {
		size := int(int32(binary.BigEndian.Uint32(buf[8:]))) + 12
		if size < 61 || size > len(buf) {
			return next, errBadBatch
		}
		batch := buf[:size]
		buf = buf[size:]
		next = int64(binary.BigEndian.Uint64(batch[0:])) + int64(int32(binary.BigEndian.Uint32(batch[23:]))) + 1
		attrs := binary.BigEndian.Uint16(batch[21:])
		pid := int64(binary.BigEndian.Uint64(batch[43:]))
		if attrs&0x7 != 0 {
			continue // the coordinator never writes compressed batches
		}
		var control, txnal bool = attrs&0x20 != 0, attrs&0x10 != 0
		n := int(int32(binary.BigEndian.Uint32(batch[57:])))
		r := kbin.Reader{Src: batch[61:]}
		for i := 0; i < n; i++ {
			l := r.Varint()
			if !r.Ok() || l < 0 || int(l) > len(r.Src) {
				return next, errBadBatch
			}
			rec := kbin.Reader{Src: r.Span(int(l))}
			rec.Int8()
			rec.Varlong()
			rec.Varint()
			key := rec.VarintBytes()
			val := rec.VarintBytes()
			if !rec.Ok() {
				return next, errBadBatch
			}
			switch {
			case control:
				if len(key) >= 4 {
					c.completeTxnLocked(pid, binary.BigEndian.Uint16(key[2:]) == 1, inPartition)
				}
			case txnal:
				c.replayTxnLocked(pid, Record{Key: key, Value: val})
			default:
				c.replayLocked(Record{Key: key, Value: val})
			}
		}
	}
	return next, nil
}

func (c *Coordinator) replayTxnLocked(pid int64, r Record) {
	var k kmsg.OffsetCommitKey
	if len(r.Key) < 2 || binary.BigEndian.Uint16(r.Key) > 1 || k.ReadFrom(r.Key) != nil || r.Value == nil {
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
	c.pendingLocked(k.Group, pid)[topicPartition{k.Topic, k.Partition}] = Offset{Offset: v.Offset, LeaderEpoch: le, Metadata: v.Metadata, CommitTime: time.UnixMilli(v.CommitTimestamp)}
}
