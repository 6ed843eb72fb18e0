package wire

import (
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
