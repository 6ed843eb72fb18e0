package replica

import (
	"fmt"

	"github.com/twmb/franz-go/pkg/kbin"

	"github.com/sluicebroker/sluice/batch"
	"github.com/sluicebroker/sluice/segment"
)

// Nothing decodes records on the produce or fetch path. ListOffsets by timestamp is the one feature
// that needs them (OffsetForTimestamp): only the one batch the time index finds is decompressed.

// firstRecordAtOrAfter returns the offset and timestamp of the first record in batch whose timestamp is
// >= ts; found is false when no record in the batch reaches ts.
func firstRecordAtOrAfter(batch []byte, ts int64) (offset, timestamp int64, found bool, err error) {
	h, err := segment.Validate(batch)
	if err != nil {
		return 0, 0, false, err
	}
	if h.HasLogAppendTime() {
		// Every record carries the broker's append time, which is the batch's max timestamp.
		if h.MaxTimestamp >= ts {
			return h.BaseOffset, h.MaxTimestamp, true, nil
		}
		return 0, 0, false, nil
	}
	records, err := decompress(h.Compression(), batch[segment.HeaderSize:])
	if err != nil {
		return 0, 0, false, err
	}
	r := kbin.Reader{Src: records}
	for i := int32(0); i < h.RecordCount; i++ {
		length := r.Varint()
		if !r.Ok() || length < 0 || int(length) > len(r.Src) {
			return 0, 0, false, fmt.Errorf("%w: record %d length %d", segment.ErrCorrupt, i, length)
		}
		rec := kbin.Reader{Src: r.Span(int(length))}
		rec.Int8() // attributes
		tsDelta := rec.Varlong()
		offDelta := rec.Varint()
		if !rec.Ok() {
			return 0, 0, false, fmt.Errorf("%w: record %d header", segment.ErrCorrupt, i)
		}
		if t := h.BaseTimestamp + tsDelta; t >= ts {
			return h.BaseOffset + int64(offDelta), t, true, nil
		}
	}
	return 0, 0, false, nil
}

// decompress returns a batch's record bytes for Kafka's codec ids.
func decompress(codec int8, src []byte) ([]byte, error) {
	if codec == batch.CodecNone {
		return src, nil
	}
	out, err := batch.Decompress(nil, codec, src)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", segment.ErrCorrupt, err)
	}
	return out, nil
}
