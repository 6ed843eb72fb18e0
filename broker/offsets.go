package broker

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() {
	// From v0: Kafka 4.0 dropped it (KIP-896), but sarama's default for old Version settings and tools
	// built on it (Burrow) still send it, and its shape is small. v7 adds the max-timestamp lookup (-3),
	// v8+ tiered storage.
	register(kmsg.ListOffsets, 0, 6, serveRequest((*Broker).handleListOffsets))
	register(kmsg.OffsetForLeaderEpoch, 0, 4, serveRequest((*Broker).handleOffsetForLeaderEpoch))
}

// ListOffsets special timestamps.
const (
	listLatest   = -1
	listEarliest = -2
)

// readCommitted is FetchRequest/ListOffsetsRequest IsolationLevel 1.
const readCommitted = 1

func (b *Broker) handleListOffsets(req *kmsg.ListOffsetsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.ListOffsetsResponse)
	for _, t := range req.Topics {
		st := kmsg.NewListOffsetsResponseTopic()
		st.Topic = t.Topic
		for _, p := range t.Partitions {
			sp := kmsg.NewListOffsetsResponseTopicPartition()
			sp.Partition = p.Partition
			sp.Timestamp, sp.Offset = -1, -1
			b.listOffset(t.Topic, p, req.IsolationLevel, &sp)
			if req.Version == 0 {
				sp.OldStyleOffsets = oldStyleOffsets(sp, p.MaxNumOffsets)
			}
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp
}

// oldStyleOffsets is ListOffsets v0's answer: a list of offsets (Kafka's were segment starts before the
// timestamp, newest first, the high watermark first for latest). Sluice answers the one offset later
// versions answer, which is what clients read: the first element.
func oldStyleOffsets(sp kmsg.ListOffsetsResponseTopicPartition, maxNum int32) []int64 {
	if sp.ErrorCode != 0 || sp.Offset < 0 || maxNum <= 0 {
		return []int64{}
	}
	return []int64{sp.Offset}
}

func (b *Broker) listOffset(topic string, p kmsg.ListOffsetsRequestTopicPartition, isolation int8, sp *kmsg.ListOffsetsResponseTopicPartition) {
	part, ok := b.replicas.Partition(topic, p.Partition)
	if !ok {
		sp.ErrorCode = errorCode(b.missingPartitionError(topic, p.Partition))
		return
	}
	if code := leaderCheck(part, p.CurrentLeaderEpoch); code != 0 {
		sp.ErrorCode = code
		return
	}
	_, _, epoch := part.Leader()
	sp.LeaderEpoch = epoch
	switch p.Timestamp {
	case listLatest:
		if isolation == readCommitted {
			sp.Offset = part.LastStableOffset()
		} else {
			sp.Offset = part.HighWatermark()
		}
	case listEarliest:
		sp.Offset = part.LogStartOffset()
	default:
		if p.Timestamp < 0 {
			sp.ErrorCode = kerr.InvalidRequest.Code
			return
		}
		offset, ts, found, err := part.OffsetForTimestamp(p.Timestamp)
		switch {
		case err != nil:
			sp.ErrorCode = errorCode(err)
		case found:
			sp.Offset, sp.Timestamp = offset, ts
		}
	}
}

// handleOffsetForLeaderEpoch tells a consumer where an epoch it saw ends (KIP-320): clients check
// their position after a leader change. Replication does not use it (Raft does that).
func (b *Broker) handleOffsetForLeaderEpoch(req *kmsg.OffsetForLeaderEpochRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.OffsetForLeaderEpochResponse)
	for _, rt := range req.Topics {
		st := kmsg.NewOffsetForLeaderEpochResponseTopic()
		st.Topic = rt.Topic
		for _, rp := range rt.Partitions {
			sp := kmsg.NewOffsetForLeaderEpochResponseTopicPartition()
			sp.Partition = rp.Partition
			sp.LeaderEpoch, sp.EndOffset = -1, -1
			part, ok := b.replicas.Partition(rt.Topic, rp.Partition)
			if !ok {
				sp.ErrorCode = errorCode(b.missingPartitionError(rt.Topic, rp.Partition))
			} else if code := leaderCheck(part, rp.CurrentLeaderEpoch); code != 0 {
				sp.ErrorCode = code
			} else {
				_, _, current := part.Leader()
				epoch, end, err := part.EpochEndOffset(rp.LeaderEpoch, current)
				sp.ErrorCode = errorCode(err)
				if err == nil {
					sp.LeaderEpoch, sp.EndOffset = epoch, end
				}
			}
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp
}
