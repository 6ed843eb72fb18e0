package quorum

import "testing"

// BenchmarkLogDB compares the Raft log stores on pipelined proposals of two sizes (rf=1).
func BenchmarkLogDB(b *testing.B) {
	for _, logDB := range []string{LogDBTan, LogDBPebble} {
		b.Run(logDB, func(b *testing.B) {
			b.Run("1K", func(b *testing.B) { benchProposeAsync(b, logDB, 1024, 256) })
			b.Run("64K", func(b *testing.B) { benchProposeAsync(b, logDB, 64<<10, 32) })
		})
	}
}
