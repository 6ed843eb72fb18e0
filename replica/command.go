package replica

import (
	"encoding/binary"

	"github.com/twmb/franz-go/pkg/kerr"
)

// A Raft entry of a partition group is a command: a kind byte, then a
// kind-specific body. Only produce exists: a transaction marker is a produce
// of the control batch ControlBatch builds, flagged flagControl.
//
// Produce (kindProduce):
//
//	[0]     kind
//	[1]     flags (flagLogAppendTime, flagControl, flagCommit)
//	[2:6]   partition leader epoch: the proposer's Raft term at proposal time
//	[6:14]  append time, Unix ms, from the proposer's clock (Update may not read a clock)
//	[14:]   the record batch v2, base offset still unset
const (
	kindProduce byte = 1

	flagLogAppendTime byte = 1 << 0
	// flagControl marks a transaction marker built by this package (clients
	// may not send control batches; the broker refuses them); flagCommit says
	// which marker it is.
	flagControl byte = 1 << 1
	flagCommit  byte = 1 << 2

	produceHeaderLen = 14
)

// encodeProduce builds the command for batch in a new buffer.
func encodeProduce(batch []byte, flags byte, leaderEpoch int32, appendTime int64) []byte {
	return appendProduce(make([]byte, 0, produceHeaderLen+len(batch)), batch, flags, leaderEpoch, appendTime)
}

// appendProduce appends the command for batch to dst.
func appendProduce(dst, batch []byte, flags byte, leaderEpoch int32, appendTime int64) []byte {
	dst = append(dst, kindProduce, flags)
	dst = binary.BigEndian.AppendUint32(dst, uint32(leaderEpoch))
	dst = binary.BigEndian.AppendUint64(dst, uint64(appendTime))
	return append(dst, batch...)
}

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
