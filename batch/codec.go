package batch

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/snappy/xerial"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// Kafka's compression codecs: the low three bits of a batch's attributes. The records section of a
// batch (everything after the header) is the same record stream whatever the codec, compressed as one
// block, so changing a batch's codec never touches a record: decompress the section, compress it again,
// rewrite three header fields.
const (
	CodecNone   int8 = 0
	CodecGzip   int8 = 1
	CodecSnappy int8 = 2
	CodecLZ4    int8 = 3
	CodecZstd   int8 = 4
)

// CodecByName maps Kafka's compression.type values to codecs; "producer" (keep the producer's) is not
// a codec and is absent.
var CodecByName = map[string]int8{"uncompressed": CodecNone, "gzip": CodecGzip, "snappy": CodecSnappy, "lz4": CodecLZ4, "zstd": CodecZstd}

// MaxDecompressed bounds what one batch's records may expand to, so a compression bomb cannot exhaust
// memory.
const MaxDecompressed = 256 << 20

// ErrTooLarge is a batch whose records expand beyond MaxDecompressed.
var ErrTooLarge = errors.New("batch: decompressed records larger than 256 MiB")

// Decompress appends the records section src, compressed with codec, decompressed to dst[:0].
func Decompress(dst []byte, codec int8, src []byte) ([]byte, error) {
	dst = dst[:0]
	switch codec {
	case CodecNone:
		return append(dst, src...), nil
	case CodecGzip:
		zr, _ := gzipReaders.Get().(*gzip.Reader)
		var err error
		if zr == nil {
			zr, err = gzip.NewReader(bytes.NewReader(src))
		} else {
			err = zr.Reset(bytes.NewReader(src))
		}
		if err != nil {
			return dst, fmt.Errorf("%w: gzip: %v", ErrMalformed, err)
		}
		dst, err = readAllInto(dst, zr)
		gzipReaders.Put(zr)
		return dst, err
	case CodecSnappy:
		// Raw snappy (franz-go, librdkafka) or xerial framing (the Java client): xerial reads both.
		out, err := xerial.DecodeInto(dst, src)
		if err != nil {
			return dst, fmt.Errorf("%w: snappy: %v", ErrMalformed, err)
		}
		if len(out) > MaxDecompressed {
			return dst, ErrTooLarge
		}
		return out, nil
	case CodecLZ4:
		lr, _ := lz4Readers.Get().(*lz4.Reader)
		if lr == nil {
			lr = lz4.NewReader(nil)
		}
		lr.Reset(bytes.NewReader(src))
		out, err := readAllInto(dst, lr)
		lz4Readers.Put(lr)
		return out, err
	case CodecZstd:
		out, err := zstdDecoder().DecodeAll(src, dst)
		if err != nil {
			return dst, fmt.Errorf("%w: zstd: %v", ErrMalformed, err)
		}
		return out, nil
	}
	return dst, fmt.Errorf("%w: unknown compression codec %d", ErrMalformed, codec)
}

// readAllInto reads r to its end, appending to dst, within MaxDecompressed.
func readAllInto(dst []byte, r io.Reader) ([]byte, error) {
	for {
		if len(dst) == cap(dst) {
			dst = append(dst, 0)[:len(dst)]
		}
		n, err := r.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		if len(dst) > MaxDecompressed {
			return dst, ErrTooLarge
		}
		if err == io.EOF {
			return dst, nil
		}
		if err != nil {
			return dst, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
	}
}

// Compress appends src (a records section) compressed with codec to dst, as Kafka's Java broker
// writes it: gzip at the default level, snappy in xerial framing, lz4 frames, zstd level 3.
func Compress(dst []byte, codec int8, src []byte) ([]byte, error) {
	switch codec {
	case CodecNone:
		return append(dst, src...), nil
	case CodecGzip:
		w := &appendWriter{b: dst}
		zw, _ := gzipWriters.Get().(*gzip.Writer)
		if zw == nil {
			zw = gzip.NewWriter(w)
		} else {
			zw.Reset(w)
		}
		_, err := zw.Write(src)
		if err == nil {
			err = zw.Close()
		}
		zw.Reset(io.Discard) // do not pin the output
		gzipWriters.Put(zw)
		return w.b, err
	case CodecSnappy:
		// xerial.Encode writes its framing header only into an empty slice: give it dst's free tail.
		n := len(dst)
		out := xerial.Encode(dst[n:n], src)
		if len(out) > 0 && cap(dst)-n >= len(out) && &dst[:n+1][n] == &out[0] {
			return dst[:n+len(out)], nil // encoded in place
		}
		return append(dst, out...), nil
	case CodecLZ4:
		w := &appendWriter{b: dst}
		lw, _ := lz4Writers.Get().(*lz4.Writer)
		if lw == nil {
			lw = lz4.NewWriter(w)
			// Kafka's own lz4 writer uses 64 KiB blocks; the 4 MiB default would pin 4 MiB per pooled writer.
			if err := lw.Apply(lz4.BlockSizeOption(lz4.Block64Kb)); err != nil {
				return dst, err
			}
		} else {
			lw.Reset(w)
		}
		_, err := lw.Write(src)
		if err == nil {
			err = lw.Close()
		}
		lw.Reset(io.Discard)
		lz4Writers.Put(lw)
		return w.b, err
	case CodecZstd:
		return zstdEncoder().EncodeAll(src, dst), nil
	}
	return dst, fmt.Errorf("batch: unknown compression codec %d", codec)
}

// Recompress appends to dst the one whole batch b with its records compressed with codec instead of
// its own: the header is copied with the codec bits, length and CRC rewritten; records, offsets,
// timestamps and producer fields are unchanged. scratch holds the decompressed records between calls
// (reuse it: nothing is allocated per record, and per batch only what the buffers lack). Check the
// batch's CRC before: a corrupt batch would come out with a valid one.
func Recompress(dst, b []byte, codec int8, scratch *[]byte) ([]byte, error) {
	if len(b) < HeaderSize {
		return dst, ErrMalformed
	}
	attrs := binary.BigEndian.Uint16(b[PosAttributes:])
	records, err := Decompress(*scratch, int8(attrs&AttrCompression), b[HeaderSize:])
	*scratch = records[:0]
	if err != nil {
		return dst, err
	}
	start := len(dst)
	dst = append(dst, b[:HeaderSize]...)
	if dst, err = Compress(dst, codec, records); err != nil {
		return dst[:start], err
	}
	out := dst[start:]
	binary.BigEndian.PutUint32(out[PosLength:], uint32(len(out)-LengthPrefix))
	binary.BigEndian.PutUint16(out[PosAttributes:], attrs&^AttrCompression|uint16(codec))
	PutCRC(out)
	return dst, nil
}

// appendWriter is an io.Writer appending to a slice (the compressors write straight into dst).
type appendWriter struct{ b []byte }

func (w *appendWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

// Codec state is pooled (gzip and lz4 keep their tables between batches); zstd's one encoder and one
// decoder are safe for concurrent EncodeAll/DecodeAll.
var (
	gzipReaders, gzipWriters, lz4Readers, lz4Writers sync.Pool

	zstdDecoder = sync.OnceValue(func() *zstd.Decoder {
		d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(MaxDecompressed))
		if err != nil {
			panic(err) // only on invalid options
		}
		return d
	})
	zstdEncoder = sync.OnceValue(func() *zstd.Encoder {
		e, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault))
		if err != nil {
			panic(err)
		}
		return e
	})
)
