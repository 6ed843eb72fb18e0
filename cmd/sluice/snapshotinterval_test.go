package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestSnapshotInterval: a partition's Raft snapshots (each a state machine Sync, counted in
// sluice_snapshot_sync_duration_seconds) wait for --raft-snapshot-interval as well as
// --raft-snapshot-entries; with a negative interval they come every so many entries.
func TestSnapshotInterval(t *testing.T) {
	syncs := func(t *testing.T, interval string) float64 {
		b := startBroker(t, withMetrics(t, "--raft-snapshot-entries", "20", "--raft-snapshot-interval", interval)...)
		b.createTopic("paced", 1, nil)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cl := b.client(kgo.ProducerLinger(0))
		defer cl.Close()
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "paced", Value: []byte("first")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		// dragonboat Syncs every state machine once soon after it starts (its periodic sync): not counted.
		time.Sleep(500 * time.Millisecond)
		before, _ := metricValue(scrape(t, metricsURL(t, b)), "sluice_snapshot_sync_duration_seconds", nil)
		for i := range 200 { // one batch each: 10x the entries
			if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "paced", Value: []byte(fmt.Sprint(i))}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(500 * time.Millisecond) // a requested snapshot completes in the background
		n, _ := metricValue(scrape(t, metricsURL(t, b)), "sluice_snapshot_sync_duration_seconds", nil)
		return n - before
	}
	if n := syncs(t, "1h"); n != 0 {
		t.Errorf("%v snapshot Syncs within the snapshot interval, want 0", n)
	}
	if n := syncs(t, "-1s"); n == 0 {
		t.Error("no snapshot Sync after 10x --raft-snapshot-entries with a negative interval")
	}
}
