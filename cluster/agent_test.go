package cluster

import (
	"fmt"
	"testing"

	"github.com/sluicebroker/sluice/quorum"
)

// TestPreferredLeaderMovesAreRateLimited: a broker that leads many partitions preferring another
// replica hands them back a bounded batch per round, round robin, so that every due partition is
// handed back within ceil(due/limit) rounds and none twice before all had their turn.
func TestPreferredLeaderMovesAreRateLimited(t *testing.T) {
	md := &quorum.Metadata{Topics: map[string]*quorum.TopicMeta{}}
	for i := range 3 {
		tm := &quorum.TopicMeta{}
		for p := range int32(5) {
			replicas := []int32{2, 1, 3} // node 2 preferred
			if p == 4 {
				replicas = []int32{1, 2, 3} // node 1 (self) preferred: never moved
			}
			tm.Partitions = append(tm.Partitions, quorum.PartitionMeta{Partition: p, Replicas: replicas})
		}
		md.Topics[fmt.Sprintf("t%d", i)] = tm
	}
	md.Topics["single"] = &quorum.TopicMeta{Partitions: []quorum.PartitionMeta{{Partition: 0, Replicas: []int32{2}}}}
	notInSync := func(name string, pm quorum.PartitionMeta) bool { return !(name == "t1" && pm.Partition == 0) }
	due := preferredLeaderMoves(md, 1, notInSync)
	if len(due) != 11 { // 3 topics x 4 partitions preferring node 2, less t1-0
		t.Fatalf("due moves %v, want 11", due)
	}
	const limit = 4
	seen := map[leaderMove]int{}
	var last leaderMove
	for round := 0; round < 3; round++ {
		var batch []leaderMove
		batch, last = takeRound(due, last, limit)
		if len(batch) != limit {
			t.Fatalf("round %d: %d transfers, want the limit %d", round, len(batch), limit)
		}
		for _, mv := range batch {
			if mv.to != 2 {
				t.Fatalf("move %v not to the preferred replica", mv)
			}
			seen[mv]++
		}
	}
	if len(seen) != len(due) {
		t.Fatalf("three rounds of %d reached %d of %d partitions", limit, len(seen), len(due))
	}
	if batch, _ := takeRound(due[:3], leaderMove{}, limit); len(batch) != 3 {
		t.Fatalf("under the limit: %d moves, want all 3", len(batch))
	}
}
