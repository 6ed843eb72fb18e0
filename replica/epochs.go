package replica

import (
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/sluicebroker/sluice/segment"
)

// Leader epochs in the log. Every batch carries the Raft term its leader proposed it in (the state
// machine keeps the stamps non-decreasing in offset order, so that a proposal accepted late by a
// re-elected leader cannot make them go back). Kafka's leader-epoch cache is then implicit: the
// end offset of an epoch is found by binary search over batch headers, which only
// OffsetForLeaderEpoch needs.

// batchHeaderAt reads the header of the batch holding offset.
func batchHeaderAt(log *segment.Log, offset int64) (segment.Header, error) {
	r, err := log.Read(offset, 0)
	if err != nil {
		return segment.Header{}, err
	}
	defer r.Release()
	if len(r.Ranges) == 0 {
		return segment.Header{}, segment.ErrOffsetOutOfRange
	}
	var hb [segment.HeaderSize]byte
	if _, err := r.Ranges[0].File.ReadAt(hb[:], r.Ranges[0].Pos); err != nil {
		return segment.Header{}, err
	}
	return segment.ParseHeader(hb[:])
}

// EpochEndOffset answers OffsetForLeaderEpoch (KIP-101/320) over committed data: the largest epoch
// at most epoch that the log holds and the offset where it ends (the first offset of a later epoch,
// or the high watermark). An epoch above every epoch in the log ends at the high watermark; -1, -1
// when epoch is above the current leader epoch.
func (p *Partition) EpochEndOffset(epoch, current int32) (leaderEpoch int32, endOffset int64, err error) {
	log := p.log.Load()
	if log == nil {
		return -1, -1, kerr.NotLeaderForPartition
	}
	if epoch > current {
		return -1, -1, nil
	}
	hw := p.hw.Load()
	lo, hi := log.StartOffset(), hw
	// Find the first offset whose batch's epoch is above the requested one.
	for lo < hi {
		mid := lo + (hi-lo)/2
		h, err := batchHeaderAt(log, mid)
		if err != nil {
			return -1, -1, KafkaError(err)
		}
		if h.PartitionLeaderEpoch > epoch {
			hi = min(h.BaseOffset, mid)
		} else {
			lo = h.NextOffset()
		}
	}
	end := min(lo, hw)
	floor := epoch
	if end > log.StartOffset() {
		if h, err := batchHeaderAt(log, end-1); err == nil && h.PartitionLeaderEpoch <= epoch {
			floor = h.PartitionLeaderEpoch
		}
	}
	if end == hw && floor < epoch {
		floor = epoch // nothing later yet: the requested epoch (at most the current one) runs to the end
	}
	return floor, end, nil
}
