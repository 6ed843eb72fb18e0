package replica

import (
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/sluicebroker/sluice/raftlog"
)

// A Raft entry of a partition group is a command in raftlog's format (raftlog.AppendCommand): a
// header (kind, flags, the proposer's term, append time, proposal number), then the record batch
// v2 with its base offset unset. The only flag is raftlog's FlagLogAppendTime: everything else the
// state machine needs is in the batch (a marker's commit or abort too), so that an entry the store
// rebuilt from the segment applies as the original did.
const flagLogAppendTime = raftlog.FlagLogAppendTime

// The result of applying one entry fits sm.Result.Value, so Update allocates
// nothing per entry: bit 63 flags an error whose Kafka code is in the low 16
// bits; otherwise bit 62 flags a duplicate and the low 62 bits are the base
// offset. The proposer knows the append time it sent.
const (
	resultError     = uint64(1) << 63
	resultDuplicate = uint64(1) << 62
	resultOffset    = resultDuplicate - 1
)

func errorResult(err error) uint64 {
	code := int16(-1) // UNKNOWN_SERVER_ERROR
	if ke, ok := err.(*kerr.Error); ok {
		code = ke.Code
	}
	return resultError | uint64(uint16(code))
}

func okResult(base int64, dup bool) uint64 {
	v := uint64(base) & resultOffset
	if dup {
		v |= resultDuplicate
	}
	return v
}

// decodeResult turns an entry's result back into its base offset, duplicate
// flag, or Kafka error.
func decodeResult(v uint64) (base int64, dup bool, err error) {
	if v&resultError != 0 {
		return 0, false, kerr.ErrorForCode(int16(uint16(v)))
	}
	return int64(v & resultOffset), v&resultDuplicate != 0, nil
}
