package group

import (
	"encoding/binary"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicebroker/sluice/batch"
)

// The records of __consumer_offsets (Kafka's offset commit key and value), and the coordinator's
// state as a partition of them is loaded (ReplayBatches) and unloaded.

// Record is one key/value of the __consumer_offsets log; a nil Value is a tombstone.
type Record = batch.Record

// offsetKey encodes Kafka's offset commit key (version 1).
func offsetKey(group, topic string, partition int32) []byte {
	k := kmsg.NewOffsetCommitKey()
	k.Version = 1
	k.Group, k.Topic, k.Partition = group, topic, partition
	return k.AppendTo(nil)
}

// decodeOffsetValue reads an offset commit value back (any version; the leader epoch exists from 3).
func decodeOffsetValue(b []byte) (Offset, bool) {
	var v kmsg.OffsetCommitValue
	if v.ReadFrom(b) != nil {
		return Offset{}, false
	}
	le := v.LeaderEpoch
	if v.Version < 3 {
		le = -1
	}
	return Offset{Offset: v.Offset, LeaderEpoch: le, Metadata: v.Metadata, CommitTime: time.UnixMilli(v.CommitTimestamp)}, true
}

// offsetValue encodes Kafka's offset commit value (version 3).
func offsetValue(o Offset) []byte {
	v := kmsg.NewOffsetCommitValue()
	v.Version = 3
	v.Offset, v.LeaderEpoch, v.Metadata, v.CommitTimestamp = o.Offset, o.LeaderEpoch, o.Metadata, o.CommitTime.UnixMilli()
	return v.AppendTo(nil)
}

// ReplayBatches replays the batches of one __consumer_offsets partition read back from its log
// (whole batches back to back), transactional offsets and markers included; inPartition tells the
// groups of that partition. It returns the offset after the last batch (-1 if none).
func (c *Coordinator) ReplayBatches(buf []byte, inPartition func(group string) bool) (next int64, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return batch.Decode(buf, func(info batch.Info, r batch.Record) {
		switch {
		case info.IsControl():
			if commit, _, ok := batch.ParseMarker(r); ok {
				c.completeTxnLocked(info.ProducerID, commit, inPartition)
			}
		case info.IsTransactional():
			c.replayTxnLocked(info.ProducerID, r)
		default:
			c.replayLocked(r)
		}
	})
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
		if o, ok := decodeOffsetValue(r.Value); ok {
			c.getOrCreate(k.Group).setOffset(k.Topic, k.Partition, o)
		}
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
