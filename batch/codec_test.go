package batch

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// textRecords is records shaped like loadgen's: JSON-ish text values of about size bytes.
func textRecords(n, size int) []Record {
	words := []string{"ERROR", "request", "completed", "started", "session", "checkout", "payment", "accepted", "the", "user"}
	recs := make([]Record, n)
	for i := range recs {
		var v []byte
		for j := 0; len(v) < size; j++ {
			v = fmt.Appendf(v, `{"id":%d,"event":%q,"n":%d},`, i, words[(i*7+j)%len(words)], j*31%1000)
		}
		recs[i] = Record{Key: fmt.Appendf(nil, "key-%d", i), Value: v[:size]}
	}
	return recs
}

var codecs = []int8{CodecNone, CodecGzip, CodecSnappy, CodecLZ4, CodecZstd}

// TestRecompressRoundTrip: a batch recompressed to any codec and back to none is the original batch
// byte for byte, and franz-go's decoder reads the recompressed one with the codec bits set.
func TestRecompressRoundTrip(t *testing.T) {
	orig := Encode(textRecords(200, 300), 1700000000000, AttrTransactional, Producer{ID: 7, Epoch: 2, BaseSequence: 40})
	var scratch []byte
	for _, from := range codecs {
		src, err := Recompress(nil, orig, from, &scratch)
		if err != nil {
			t.Fatalf("to %d: %v", from, err)
		}
		for _, to := range codecs {
			prefix := []byte("keep")
			out, err := Recompress(prefix, src, to, &scratch)
			if err != nil {
				t.Fatalf("%d -> %d: %v", from, to, err)
			}
			if !bytes.Equal(out[:4], prefix) {
				t.Fatalf("%d -> %d: dst prefix overwritten", from, to)
			}
			b := out[4:]
			if Checksum(b) != binary.BigEndian.Uint32(b[PosCRC:]) {
				t.Fatalf("%d -> %d: bad CRC", from, to)
			}
			if got := int8(binary.BigEndian.Uint16(b[PosAttributes:]) & AttrCompression); got != to {
				t.Fatalf("%d -> %d: codec bits %d", from, to, got)
			}
			var rb kmsg.RecordBatch
			if err := rb.ReadFrom(b); err != nil || int(rb.Length)+LengthPrefix != len(b) || rb.NumRecords != 200 || rb.ProducerID != 7 {
				t.Fatalf("%d -> %d: franz-go reads %+v, %v", from, to, rb.NumRecords, err)
			}
			back, err := Recompress(nil, b, CodecNone, &scratch)
			if err != nil || !bytes.Equal(back, orig) {
				t.Fatalf("%d -> %d -> none: not the original batch (%v)", from, to, err)
			}
		}
	}
	bad := append([]byte(nil), orig[:HeaderSize]...)
	binary.BigEndian.PutUint16(bad[PosAttributes:], uint16(CodecZstd))
	bad = append(bad, "not zstd"...)
	if _, err := Recompress(nil, bad, CodecGzip, &scratch); err == nil {
		t.Fatal("a garbage zstd section recompressed without an error")
	}
}

// BenchmarkRecompress is the broker's cost of compression.type on a topic, per produced batch: 1,000
// records of 1 KiB of text (1 MiB uncompressed), from the producer's codec to the topic's. Bytes/s is of
// uncompressed record bytes. The producer default (no recompression) costs nothing: it is not called.
func BenchmarkRecompress(b *testing.B) {
	recs := textRecords(1000, 1024)
	plain := Encode(recs, 1700000000000, 0, NoProducer)
	names := map[int8]string{CodecNone: "none", CodecGzip: "gzip", CodecSnappy: "snappy", CodecLZ4: "lz4", CodecZstd: "zstd"}
	pairs := [][2]int8{
		{CodecNone, CodecLZ4}, {CodecNone, CodecZstd}, {CodecNone, CodecSnappy}, {CodecNone, CodecGzip},
		{CodecSnappy, CodecZstd}, {CodecLZ4, CodecZstd}, {CodecZstd, CodecLZ4}, {CodecGzip, CodecZstd}, {CodecZstd, CodecNone},
	}
	for _, p := range pairs {
		var scratch []byte
		src, err := Recompress(nil, plain, p[0], &scratch)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(names[p[0]]+"_to_"+names[p[1]], func(b *testing.B) {
			b.SetBytes(int64(len(plain) - HeaderSize))
			b.ReportAllocs()
			var dst []byte
			var out []byte
			for b.Loop() {
				out, err = Recompress(dst[:0], src, p[1], &scratch)
				if err != nil {
					b.Fatal(err)
				}
				dst = out
			}
			b.ReportMetric(float64(len(src))/float64(len(out)), "in/out")
		})
	}
}
