package group

import (
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicebroker/sluice/batch"
)

// Record is one key/value of the __consumer_offsets log; a nil Value is a tombstone.
type Record = batch.Record

// offsetKey encodes Kafka's offset commit key (version 1).
func offsetKey(group, topic string, partition int32) []byte {
	k := kmsg.NewOffsetCommitKey()
	k.Version = 1
	k.Group, k.Topic, k.Partition = group, topic, partition
	return k.AppendTo(nil)
}

// offsetValue encodes Kafka's offset commit value (version 3).
func offsetValue(o Offset) []byte {
	v := kmsg.NewOffsetCommitValue()
	v.Version = 3
	v.Offset, v.LeaderEpoch, v.Metadata, v.CommitTimestamp = o.Offset, o.LeaderEpoch, o.Metadata, o.CommitTime.UnixMilli()
	return v.AppendTo(nil)
}
