package replica

import (
	"math"
	"testing"
	"time"

	"github.com/sluicebroker/sluice/quorum"
)

// TestSnapshotSpacedInTime: a partition past SnapshotEntries takes no snapshot (no Raft log
// compaction, so the retention floor stays at the log start) until SnapshotInterval has passed
// since the last one; then it takes one without reaching dragonboat's entry ceiling.
func TestSnapshotSpacedInTime(t *testing.T) {
	const entries = 20
	run := func(t *testing.T, interval time.Duration, produced int, pause time.Duration) int64 {
		n := startNodeHost(t, 1, t.TempDir(), freeAddr(t), Config{}, quorum.HostConfig{
			SnapshotEntries: entries, CompactionOverhead: 5, SnapshotInterval: interval,
		})
		defer n.close()
		n.apply(testTopic{name: "pace", partitions: 1, firstShard: 1000})
		p := n.partition("pace", 0)
		for i := 0; i < produced; i++ {
			produce(t, p, makeBatch(-1, 0, 0, 1, 10))
			time.Sleep(pause)
		}
		rl, err := n.host.RaftLog().Partition(p.shardID, 1)
		if err != nil {
			t.Fatal(err)
		}
		// A requested snapshot completes in the background: give it a moment.
		floor := rl.RetentionFloor()
		for deadline := time.Now().Add(5 * time.Second); floor == 0 && interval < time.Minute && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
			floor = rl.RetentionFloor()
		}
		return floor
	}
	t.Run("within the interval", func(t *testing.T) {
		// 10x SnapshotEntries, well under the ceiling (50x): entries alone would have compacted.
		if floor := run(t, time.Hour, 10*entries, 0); floor != 0 {
			t.Fatalf("retention floor %d: the log was compacted within the snapshot interval", floor)
		}
	})
	t.Run("after the interval", func(t *testing.T) {
		floor := run(t, 50*time.Millisecond, 4*entries, 5*time.Millisecond)
		if floor == 0 || floor == math.MaxInt64 {
			t.Fatalf("retention floor %d: no snapshot after the interval", floor)
		}
	})
}
