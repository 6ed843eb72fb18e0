package broker

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/snappy/xerial"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/twmb/franz-go/pkg/kbin"

	"github.com/sluicebroker/sluice/segment"
)

// The broker never decodes records on the produce or fetch path. ListOffsets by timestamp is the one
// feature that needs them: the time index finds the batch, and only that one batch is decompressed to
// find the first record at or after the timestamp, as Kafka answers at record granularity.

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

var zstdDecoder = sync.OnceValue(func() *zstd.Decoder {
	d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(maxDecompressed))
	if err != nil {
		panic(err) // only on invalid options
	}
	return d
})

// maxDecompressed bounds what one batch may expand to, so a compression bomb cannot exhaust memory.
const maxDecompressed = 256 << 20

var errTooLarge = errors.New("decompressed batch larger than 256 MiB")

// decompress returns a batch's record bytes for Kafka's codec ids.
func decompress(codec int8, src []byte) ([]byte, error) {
	var rd io.Reader
	switch codec {
	case 0:
		return src, nil
	case 1:
		zr, err := gzip.NewReader(bytes.NewReader(src))
		if err != nil {
			return nil, fmt.Errorf("%w: gzip: %v", segment.ErrCorrupt, err)
		}
		defer zr.Close()
		rd = zr
	case 2:
		// Raw snappy (franz-go, librdkafka) or xerial framing (the Java client): xerial handles both.
		out, err := xerial.Decode(src)
		if err != nil {
			return nil, fmt.Errorf("%w: snappy: %v", segment.ErrCorrupt, err)
		}
		return out, nil
	case 3:
		rd = lz4.NewReader(bytes.NewReader(src))
	case 4:
		out, err := zstdDecoder().DecodeAll(src, nil)
		if err != nil {
			return nil, fmt.Errorf("%w: zstd: %v", segment.ErrCorrupt, err)
		}
		return out, nil
	default:
		return nil, fmt.Errorf("%w: unknown compression codec %d", segment.ErrCorrupt, codec)
	}
	out, err := io.ReadAll(io.LimitReader(rd, maxDecompressed+1))
	if err != nil {
		return nil, fmt.Errorf("%w: codec %d: %v", segment.ErrCorrupt, codec, err)
	}
	if len(out) > maxDecompressed {
		return nil, errTooLarge
	}
	return out, nil
}
