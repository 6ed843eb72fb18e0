package broker

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() {
	// DeleteRecords v0-2 (kafka-delete-records.sh, kadm DeleteRecords): sent to each partition's
	// leader.
	register(kmsg.DeleteRecords, 0, 2, serveRequest((*Broker).handleDeleteRecords))
}

// handleDeleteRecords moves each partition's log start offset up to the offset asked (-1: the high
// watermark). The new start is a floor in the cluster metadata, replicated by the controller group
// and so kept across restarts and leader changes; Fetch, ListOffsets and OffsetForTimestamp honour
// it at once. The segments wholly below it are deleted by the next retention pass
// (--retention-check-interval; Kafka deletes them at once).
func (b *Broker) handleDeleteRecords(req *kmsg.DeleteRecordsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.DeleteRecordsResponse)
	ctx, cancel := b.requestContext(req.TimeoutMillis)
	defer cancel()
	for _, rt := range req.Topics {
		st := kmsg.NewDeleteRecordsResponseTopic()
		st.Topic = rt.Topic
		for _, rp := range rt.Partitions {
			sp := kmsg.NewDeleteRecordsResponseTopicPartition()
			sp.Partition, sp.LowWatermark = rp.Partition, -1
			part, ok := b.replicas.Partition(rt.Topic, rp.Partition)
			if !ok {
				sp.ErrorCode = errorCode(b.missingPartitionError(rt.Topic, rp.Partition))
				st.Partitions = append(st.Partitions, sp)
				continue
			}
			if code := leaderCheck(part, -1); code != 0 {
				sp.ErrorCode = code
				st.Partitions = append(st.Partitions, sp)
				continue
			}
			hw, offset := part.HighWatermark(), rp.Offset
			if offset == -1 {
				offset = hw
			}
			switch {
			case offset < 0 || offset > hw:
				sp.ErrorCode = kerr.OffsetOutOfRange.Code
			case offset <= part.LogStartOffset():
				sp.LowWatermark = part.LogStartOffset() // nothing to delete
			default:
				if err := b.ctl.DeleteRecords(ctx, rt.Topic, rp.Partition, offset); err != nil {
					sp.ErrorCode = errorCode(err)
					break
				}
				part.SetStartFloor(offset) // at once here; every replica applies it with the metadata
				sp.LowWatermark = part.LogStartOffset()
			}
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp
}
