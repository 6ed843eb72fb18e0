package main

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestMetrics scrapes --metrics-addr after a produce, a consume and a group commit, parses the
// Prometheus text, and checks the counters, histograms and state gauges against what was done.
func TestMetrics(t *testing.T) {
	maddr := freePort(t)
	launched := time.Now().Truncate(time.Second)
	b := startBroker(t, "--metrics-addr", maddr)
	base := "http://" + maddr
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body := httpGet(t, base+path); code != http.StatusOK {
			t.Fatalf("%s: %d %s", path, code, body)
		}
	}

	const topic, group, n = "metered", "metered-group", 40
	b.createTopic(topic, 2, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	prod := b.client(kgo.ProducerLinger(0), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for i := range n {
		// One record per request: each is its own batch, so the record counter must add up per batch.
		if err := prod.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: int32(i % 2), Value: []byte(fmt.Sprint(i))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	if got := consumeAll(t, b, topic); len(got) != n {
		t.Fatalf("consumed %d, want %d", len(got), n)
	}
	// The group has committed 5 of partition 0's 20 records and nothing of partition 1.
	offs := kadm.Offsets{}
	offs.Add(kadm.Offset{Topic: topic, Partition: 0, At: 5, LeaderEpoch: -1})
	resp, err := b.admin().CommitOffsets(ctx, group, offs)
	if err != nil || resp.Error() != nil {
		t.Fatalf("commit: %v %v", err, resp.Error())
	}

	fams := scrape(t, base)
	expect := func(name string, labels map[string]string, check func(float64) bool, what string) {
		t.Helper()
		v, ok := metricValue(fams, name, labels)
		if !ok {
			t.Errorf("%s%v: missing", name, labels)
			return
		}
		if !check(v) {
			t.Errorf("%s%v = %v, want %s", name, labels, v, what)
		}
	}
	eq := func(want float64) func(float64) bool { return func(v float64) bool { return v == want } }
	positive := func(v float64) bool { return v > 0 }
	expect("sluice_requests_total", map[string]string{"api": "Produce"}, func(v float64) bool { return v >= n }, ">= 40")
	expect("sluice_requests_total", map[string]string{"api": "Fetch"}, positive, "> 0")
	expect("sluice_request_duration_seconds", map[string]string{"api": "Produce"}, func(v float64) bool { return v >= n }, "a count >= 40")
	expect("sluice_topic_records_total", map[string]string{"topic": topic, "direction": "in"}, eq(n), "40")
	expect("sluice_topic_records_total", map[string]string{"topic": topic, "direction": "out"}, func(v float64) bool { return v >= n }, ">= 40")
	expect("sluice_topic_bytes_total", map[string]string{"topic": topic, "direction": "in"}, positive, "> 0")
	expect("sluice_topic_bytes_total", map[string]string{"topic": topic, "direction": "out"}, positive, "> 0")
	expect("sluice_network_bytes_total", map[string]string{"direction": "in"}, positive, "> 0")
	expect("sluice_network_bytes_total", map[string]string{"direction": "out"}, positive, "> 0")
	expect("sluice_partition_high_watermark", map[string]string{"topic": topic, "partition": "0"}, eq(n/2), "20")
	expect("sluice_partition_start_time_seconds", map[string]string{"topic": topic, "partition": "1"}, func(v float64) bool {
		return v >= float64(launched.Unix()) && v < float64(time.Now().Unix()+1)
	}, "a time since the broker's launch")
	expect("sluice_consumer_group_committed_offset", map[string]string{"group": group, "topic": topic, "partition": "0"}, eq(5), "5")
	expect("sluice_consumer_group_lag", map[string]string{"group": group, "topic": topic, "partition": "0"}, eq(n/2-5), "15")
	expect("sluice_under_replicated_partitions", nil, eq(0), "0")
	expect("sluice_offline_partitions", nil, eq(0), "0")
	expect("sluice_partitions", nil, func(v float64) bool { return v >= 2 }, ">= 2 (the topic's, plus internal ones)")
	parts, _ := metricValue(fams, "sluice_partitions", nil)
	expect("sluice_partition_leaders", nil, eq(parts), "every partition (one broker)")
	expect("sluice_raft_commit_duration_seconds", nil, func(v float64) bool { return v >= n }, "a count >= 40")
	// Every acknowledged produce waited for a save's fsync (40 records: at least one save).
	expect("sluice_raft_save_sync_duration_seconds", nil, positive, "a count > 0")
	expect("sluice_connections", nil, positive, "> 0")
	expect("process_cpu_seconds_total", nil, positive, "> 0")
	expect("go_goroutines", nil, positive, "> 0")
	if _, ok := fams["sluice_fsync_duration_seconds"]; !ok {
		t.Error("sluice_fsync_duration_seconds missing")
	}
}
