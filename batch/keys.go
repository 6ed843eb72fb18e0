package batch

import "encoding/binary"

// HasNullKey reports whether a record of the one whole batch b has a null key: a compacted topic
// refuses such a batch (Kafka's INVALID_RECORD), since compaction keeps records by key. A compressed
// batch is decompressed into scratch (reuse it between calls); records are walked in place, only
// their length, attributes, two deltas and key length read: nothing is allocated per record.
func HasNullKey(b []byte, scratch *[]byte) (bool, error) {
	if len(b) < HeaderSize {
		return false, ErrMalformed
	}
	be := binary.BigEndian
	n := int(int32(be.Uint32(b[PosRecordCount:])))
	recs := b[HeaderSize:]
	if codec := int8(be.Uint16(b[PosAttributes:]) & AttrCompression); codec != CodecNone {
		out, err := Decompress(*scratch, codec, recs)
		*scratch = out[:0]
		if err != nil {
			return false, err
		}
		recs = out
	}
	for range n {
		l, k := binary.Varint(recs)
		if k <= 0 || l < 1 || l > int64(len(recs)-k) {
			return false, ErrMalformed
		}
		rec := recs[k+1 : k+int(l)] // after the attributes byte
		recs = recs[k+int(l):]
		for range 2 { // timestamp delta, offset delta
			_, m := binary.Varint(rec)
			if m <= 0 {
				return false, ErrMalformed
			}
			rec = rec[m:]
		}
		kl, m := binary.Varint(rec)
		if m <= 0 {
			return false, ErrMalformed
		}
		if kl < 0 {
			return true, nil
		}
	}
	return false, nil
}
