package wire

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// NewCompressor returns the compressor for a codec name (none, gzip, snappy, lz4, zstd); nil for
// none. A compressor belongs to one goroutine.
func NewCompressor(name string) (Compressor, error) {
	switch name {
	case "", "none":
		return nil, nil
	case "gzip":
		return &gzipC{}, nil
	case "snappy":
		return snappyC{}, nil
	case "lz4":
		return &lz4C{}, nil
	case "zstd":
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedDefault))
		if err != nil {
			return nil, err
		}
		return &zstdC{enc: enc}, nil
	}
	return nil, fmt.Errorf("unknown compression %q", name)
}

type gzipC struct {
	w   *gzip.Writer
	buf bytes.Buffer
}

func (*gzipC) Codec() int16 { return CodecGzip }
func (g *gzipC) Compress(dst, src []byte) []byte {
	g.buf.Reset()
	if g.w == nil {
		g.w, _ = gzip.NewWriterLevel(&g.buf, gzip.DefaultCompression)
	} else {
		g.w.Reset(&g.buf)
	}
	_, _ = g.w.Write(src)
	_ = g.w.Close()
	return append(dst, g.buf.Bytes()...)
}

// snappyC writes raw snappy blocks (as franz-go and librdkafka do; Kafka reads both raw and xerial-framed).
type snappyC struct{}

func (snappyC) Codec() int16 { return CodecSnappy }
func (snappyC) Compress(dst, src []byte) []byte {
	n := s2.MaxEncodedLen(len(src))
	start := len(dst)
	dst = append(dst, make([]byte, n)...)
	out := s2.EncodeSnappy(dst[start:], src)
	return dst[:start+len(out)]
}

type lz4C struct {
	w   *lz4.Writer
	buf bytes.Buffer
}

func (*lz4C) Codec() int16 { return CodecLz4 }
func (l *lz4C) Compress(dst, src []byte) []byte {
	l.buf.Reset()
	if l.w == nil {
		l.w = lz4.NewWriter(&l.buf)
	} else {
		l.w.Reset(&l.buf)
	}
	_, _ = l.w.Write(src)
	_ = l.w.Close()
	return append(dst, l.buf.Bytes()...)
}

type zstdC struct{ enc *zstd.Encoder }

func (*zstdC) Codec() int16                      { return CodecZstd }
func (z *zstdC) Compress(dst, src []byte) []byte { return z.enc.EncodeAll(src, dst) }

// Decompressor undoes every codec; it belongs to one goroutine and reuses its buffers.
type Decompressor struct {
	gz   *gzip.Reader
	lz   *lz4.Reader
	zs   *zstd.Decoder
	out  bytes.Buffer
	zbuf []byte
}

var xerialMagic = []byte{0x82, 'S', 'N', 'A', 'P', 'P', 'Y', 0}

// Decompress returns the records of a batch compressed with codec; the result is valid until the
// next call.
func (d *Decompressor) Decompress(codec int16, src []byte) ([]byte, error) {
	switch codec {
	case CodecGzip:
		var err error
		if d.gz == nil {
			d.gz, err = gzip.NewReader(bytes.NewReader(src))
		} else {
			err = d.gz.Reset(bytes.NewReader(src))
		}
		if err != nil {
			return nil, err
		}
		return d.readAll(d.gz)
	case CodecSnappy:
		if bytes.HasPrefix(src, xerialMagic) {
			return d.xerial(src)
		}
		n, err := s2.DecodedLen(src)
		if err != nil {
			return nil, err
		}
		d.zbuf = growTo(d.zbuf, n)
		return s2.Decode(d.zbuf, src)
	case CodecLz4:
		if d.lz == nil {
			d.lz = lz4.NewReader(bytes.NewReader(src))
		} else {
			d.lz.Reset(bytes.NewReader(src))
		}
		return d.readAll(d.lz)
	case CodecZstd:
		if d.zs == nil {
			var err error
			if d.zs, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1)); err != nil {
				return nil, err
			}
		}
		out, err := d.zs.DecodeAll(src, d.zbuf[:0])
		d.zbuf = out
		return out, err
	}
	return nil, fmt.Errorf("unknown compression codec %d", codec)
}

func (d *Decompressor) readAll(r io.Reader) ([]byte, error) {
	d.out.Reset()
	_, err := d.out.ReadFrom(r)
	return d.out.Bytes(), err
}

// xerial decodes the framed snappy format the Java client writes.
func (d *Decompressor) xerial(src []byte) ([]byte, error) {
	src = src[16:] // magic, version, compatible version
	d.out.Reset()
	for len(src) > 0 {
		if len(src) < 4 {
			return nil, errors.New("xerial snappy: truncated chunk")
		}
		n := int(uint32(src[0])<<24 | uint32(src[1])<<16 | uint32(src[2])<<8 | uint32(src[3]))
		src = src[4:]
		if n > len(src) {
			return nil, errors.New("xerial snappy: truncated chunk")
		}
		dn, err := s2.DecodedLen(src[:n])
		if err != nil {
			return nil, err
		}
		d.zbuf = growTo(d.zbuf, dn)
		out, err := s2.Decode(d.zbuf, src[:n])
		if err != nil {
			return nil, err
		}
		d.out.Write(out)
		src = src[n:]
	}
	return d.out.Bytes(), nil
}

func growTo(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n)
	}
	return b[:n]
}
