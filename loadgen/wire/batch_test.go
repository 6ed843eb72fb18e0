package wire

import (
	"encoding/binary"
	"testing"
)

// BenchmarkAppendSeal is the native producer's per-record cost: stamp a pre-encoded 100-byte
// record, and per batch the header and CRC.
func BenchmarkAppendSeal(b *testing.B) {
	payload := make([]byte, 1<<16)
	batch := NewBatch(1<<20, 10000)
	const perBatch = 8000
	b.SetBytes(100)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		batch.Append(100, -1, nil, payload[(batch.N*4099)%(1<<15):], int64(i), 0, uint64(i))
		if batch.N == perBatch {
			batch.Seal(nil, 1, 0, 0, 0)
			batch.Reset()
		}
	}
}

// A batch object reused with the same, then different, record sizes and keys encodes records a
// reader decodes back exactly (offsets, values, stamps) with a valid CRC, compressed or not.
func TestBatchReuseRoundTrip(t *testing.T) {
	payload := make([]byte, 1<<12)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	b := NewBatch(1<<16, 64)
	var d Decompressor
	rounds := []struct {
		sizes []int
		codec string
	}{
		{[]int{100, 100, 100}, "none"},
		{[]int{100, 100, 100}, "none"},     // reused: only stamps change
		{[]int{100, 300, 100, 50}, "zstd"}, // a size changes mid-batch
		{[]int{100, 300, 100, 50}, "gzip"}, // and is reused
		{[]int{20, 20}, "lz4"},             // shorter than before
		{[]int{120, 80, 400}, "snappy"},
	}
	seq := uint64(0)
	for ri, r := range rounds {
		b.Reset()
		for i, n := range r.sizes {
			var key []byte
			ki := int32(-1)
			if i%2 == 1 {
				ki, key = int32(i), []byte{'k', byte(i)}
			}
			b.Append(n, ki, key, payload[i*64:], int64(1000*ri+i), 9, seq)
			seq++
		}
		c, err := NewCompressor(r.codec)
		if err != nil {
			t.Fatal(err)
		}
		b.Seal(c, 5, 1, int32(ri*10), 1700000000000)
		w := b.Wire()
		if !CheckCRC(w) {
			t.Fatalf("round %d: bad CRC", ri)
		}
		h, recs, rest, ok, _ := NextBatch(w)
		if !ok || len(rest) != 0 || h.Count != int32(len(r.sizes)) || h.LastOffsetDelta != int32(len(r.sizes)-1) || h.BaseSequence != int32(ri*10) || h.ProducerID != 5 {
			t.Fatalf("round %d: header %+v ok %v rest %d", ri, h, ok, len(rest))
		}
		if h.Codec() != CodecNone {
			if recs, err = d.Decompress(h.Codec(), recs); err != nil {
				t.Fatalf("round %d: %v", ri, err)
			}
		}
		it := Records(recs, h.Count)
		for i, n := range r.sizes {
			delta, v, ok := it.Next()
			if !ok || delta != int32(i) || len(v) != n {
				t.Fatalf("round %d record %d: delta %d len %d ok %v err %v", ri, i, delta, len(v), ok, it.Err)
			}
			if got := int64(binary.BigEndian.Uint64(v)); got != int64(1000*ri+i) {
				t.Fatalf("round %d record %d: stamp %d", ri, i, got)
			}
			if n > StampSize && string(v[StampSize:]) != string(payload[i*64+StampSize:i*64+n]) {
				t.Fatalf("round %d record %d: payload differs", ri, i)
			}
		}
		if _, _, ok := it.Next(); ok || it.Err != nil {
			t.Fatalf("round %d: trailing record or error %v", ri, it.Err)
		}
	}
}
