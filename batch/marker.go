package batch

import "encoding/binary"

// A transaction marker is a control batch (transactional and control attributes) of the producer at
// its epoch, with no sequence, holding one record: key version 0 and type (0 abort, 1 commit), value
// version 0 and the coordinator epoch. Only the broker writes them; clients may not.

// markerCoordinatorEpochPos is where Marker puts the coordinator epoch: the value's last four bytes,
// after the record's length (one byte), attributes, timestamp and offset deltas (one byte each),
// key length and key (1+4), value length and version (1+2).
const markerCoordinatorEpochPos = HeaderSize + 1 + 3 + 5 + 3

// Marker encodes a commit or abort marker of producer pid at epoch, stamped ts (Unix ms).
func Marker(pid int64, epoch int16, coordinatorEpoch int32, commit bool, ts int64) []byte {
	typ := byte(0)
	if commit {
		typ = 1
	}
	key := []byte{0, 0, 0, typ}
	value := binary.BigEndian.AppendUint32([]byte{0, 0}, uint32(coordinatorEpoch))
	return Encode([]Record{{Key: key, Value: value}}, ts, AttrTransactional|AttrControl,
		Producer{ID: pid, Epoch: epoch, BaseSequence: -1})
}

// ParseMarker reads a control record: whether it commits, and the coordinator epoch (-1 when the
// value does not carry one). ok is false for a record that is not a marker.
func ParseMarker(r Record) (commit bool, coordinatorEpoch int32, ok bool) {
	if len(r.Key) < 4 || binary.BigEndian.Uint16(r.Key) != 0 {
		return false, -1, false
	}
	coordinatorEpoch = -1
	if len(r.Value) >= 6 {
		coordinatorEpoch = int32(binary.BigEndian.Uint32(r.Value[2:]))
	}
	return binary.BigEndian.Uint16(r.Key[2:]) == 1, coordinatorEpoch, true
}

// markerTypePos is where Marker puts the key's type (0 abort, 1 commit): after the record's
// length, attributes, timestamp and offset deltas, key length (one byte each) and key version.
const markerTypePos = HeaderSize + 1 + 3 + 1 + 2

// MarkerCommits says whether a marker built by Marker commits, without decoding it (the apply
// path's reading; the layout is fixed); false for a batch that is not a control batch.
func MarkerCommits(b []byte) bool {
	if len(b) < markerTypePos+2 || binary.BigEndian.Uint16(b[PosAttributes:])&AttrControl == 0 {
		return false
	}
	return binary.BigEndian.Uint16(b[markerTypePos:]) == 1
}

// MarkerCoordinatorEpoch reads the coordinator epoch of a marker built by Marker without decoding
// it (the apply path's reading; the layout is fixed); -1 for a batch that is not a control batch.
func MarkerCoordinatorEpoch(b []byte) int32 {
	if len(b) < markerCoordinatorEpochPos+4 || binary.BigEndian.Uint16(b[PosAttributes:])&AttrControl == 0 {
		return -1
	}
	return int32(binary.BigEndian.Uint32(b[markerCoordinatorEpochPos:]))
}
