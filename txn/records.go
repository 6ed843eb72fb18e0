package txn

import (
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicebroker/sluice/batch"
)

// Record is one key/value of the __transaction_state log; a nil Value is a tombstone.
type Record = batch.Record

// encodeRecord is Kafka's TransactionLog record: key version 0 (the id), value version 0.
func encodeRecord(t *txn) Record {
	k := kmsg.NewTxnMetadataKey()
	k.TransactionalID = t.id
	v := kmsg.NewTxnMetadataValue()
	v.ProducerID, v.ProducerEpoch, v.TimeoutMillis = t.pid, t.epoch, t.timeoutMs
	v.State = t.state
	v.LastUpdateTimestamp = t.lastUpdate.UnixMilli()
	v.StartTimestamp = -1
	if !t.start.IsZero() {
		v.StartTimestamp = t.start.UnixMilli()
	}
	for _, tp := range t.sortedParts() {
		if n := len(v.Topics); n == 0 || v.Topics[n-1].Topic != tp.Topic {
			vt := kmsg.NewTxnMetadataValueTopic()
			vt.Topic = tp.Topic
			v.Topics = append(v.Topics, vt)
		}
		vt := &v.Topics[len(v.Topics)-1]
		vt.Partitions = append(vt.Partitions, tp.Partition)
	}
	return Record{Key: k.AppendTo(nil), Value: v.AppendTo(nil)}
}

// decodeRecord reads a TransactionLog record back; ok is false for records of other kinds.
func decodeRecord(r Record) (id string, t *txn, ok bool) {
	var k kmsg.TxnMetadataKey
	if len(r.Key) < 2 || k.ReadFrom(r.Key) != nil || k.Version != 0 {
		return "", nil, false
	}
	if r.Value == nil {
		return k.TransactionalID, nil, true
	}
	var v kmsg.TxnMetadataValue
	if v.ReadFrom(r.Value) != nil {
		return "", nil, false
	}
	t = &txn{id: k.TransactionalID, pid: v.ProducerID, epoch: v.ProducerEpoch, timeoutMs: v.TimeoutMillis, state: v.State,
		parts: map[TopicPartition]struct{}{}, lastUpdate: time.UnixMilli(v.LastUpdateTimestamp)}
	if v.StartTimestamp >= 0 {
		t.start = time.UnixMilli(v.StartTimestamp)
	}
	for _, vt := range v.Topics {
		for _, p := range vt.Partitions {
			t.parts[TopicPartition{vt.Topic, p}] = struct{}{}
		}
	}
	return k.TransactionalID, t, true
}

func (t *txn) sortedParts() []TopicPartition {
	out := make([]TopicPartition, 0, len(t.parts))
	for tp := range t.parts {
		out = append(out, tp)
	}
	slices.SortFunc(out, func(a, b TopicPartition) int {
		if a.Topic != b.Topic {
			if a.Topic < b.Topic {
				return -1
			}
			return 1
		}
		return int(a.Partition - b.Partition)
	})
	return out
}

// ReplayBatches replays the batches of one __transaction_state partition read back from its log
// (whole batches back to back), keeping the ids for which inPartition is true (the ids of that
// partition, so that unloading it later drops all it loaded). It returns the offset after the last
// batch (-1 if none). The coordinator writes no markers there; any control batch is skipped.
func (c *Coordinator) ReplayBatches(buf []byte, inPartition func(txnID string) bool) (next int64, err error) {
	return batch.Decode(buf, func(info batch.Info, r batch.Record) {
		if !info.IsControl() {
			c.replay(r, inPartition)
		}
	})
}
