package main

import (
	"testing"
	"time"
)

func TestValueRoundTrip(t *testing.T) {
	k := key{prod: 3, part: 5, seq: 123456}
	v := encodeValue(k, 100)
	if len(v) != 100 {
		t.Fatalf("len %d, want 100", len(v))
	}
	got, ok := decodeValue(v)
	if !ok || got != k {
		t.Fatalf("decode = %v %v, want %v", got, ok, k)
	}
	if _, ok := decodeValue([]byte("probe")); ok {
		t.Fatal("decoded a foreign value")
	}
}

// TestVerify builds a final log with one of each defect and checks each is counted once.
func TestVerify(t *testing.T) {
	cfg := config{partitions: 2}
	fl := &finalLog{keys: []map[int64]key{{}, {}}, hash: []map[int64]uint64{{}, {}}}
	put := func(p int32, off int64, k key) { fl.keys[p][off] = k }
	acks := map[key]int64{}
	// Partition 0: producer 0 seq 1..4 in order, all acknowledged where they are.
	for i := range int64(4) {
		k := key{0, 0, uint32(i + 1)}
		put(0, i, k)
		acks[k] = i
	}
	// Partition 1: seq 1, seq 3, seq 2 (reordered), seq 3 again (duplicate).
	put(1, 0, key{1, 1, 1})
	put(1, 1, key{1, 1, 3})
	put(1, 2, key{1, 1, 2})
	put(1, 3, key{1, 1, 3})
	acks[key{1, 1, 1}] = 0
	acks[key{1, 1, 2}] = 1 // acknowledged at 1, found at 2: lost (moved)
	acks[key{1, 1, 9}] = 7 // acknowledged, absent: lost (missing)
	sum := &chaosSummary{PerPartition: make([]partSummary, 2)}
	verify(sum, acks, fl, cfg)
	if sum.Lost != 2 || sum.LostMoved != 1 || sum.LostMissing != 1 {
		t.Errorf("lost %d (moved %d, missing %d), want 2 (1, 1)", sum.Lost, sum.LostMoved, sum.LostMissing)
	}
	if sum.Duplicated != 1 {
		t.Errorf("duplicated %d, want 1", sum.Duplicated)
	}
	if sum.Reordered != 1 {
		t.Errorf("reordered %d, want 1", sum.Reordered)
	}
	if sum.UnackedPresent != 1 { // seq 3 was never acknowledged
		t.Errorf("unacknowledged but present %d, want 1", sum.UnackedPresent)
	}
	if sum.LogRecords != 8 {
		t.Errorf("log records %d, want 8", sum.LogRecords)
	}
}

func TestPartTrackLongestGap(t *testing.T) {
	t0 := time.Unix(1000, 0)
	pt := &partTrack{last: t0}
	for _, ms := range []int{10, 20, 1500, 1510, 1400} { // 1400 arrives late: not a gap
		pt.ack(t0.Add(time.Duration(ms) * time.Millisecond))
	}
	if pt.maxGap != 1480*time.Millisecond || !pt.maxGapAt.Equal(t0.Add(20*time.Millisecond)) {
		t.Fatalf("max gap %v at %v", pt.maxGap, pt.maxGapAt.Sub(t0))
	}
}

func TestStats(t *testing.T) {
	var v []float64
	for i := 1; i <= 20; i++ {
		v = append(v, float64(i))
	}
	s := statsOf(v)
	if s.Median != 10 || s.P90 != 18 || s.Max != 20 || s.Min != 1 {
		t.Fatalf("%+v", s)
	}
}
