package replica

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/sluicebroker/sluice/quorum"
)

// TestFollowerCatchesUpBySnapshot runs one partition on three nodes, stops a
// follower, produces past the leader's log compaction, and restarts the
// follower: it must receive the leader's snapshot stream and end with the
// leader's batches at the same offsets.
func TestFollowerCatchesUpBySnapshot(t *testing.T) {
	if testing.Short() {
		t.Skip("three Raft hosts")
	}
	dir := t.TempDir()
	addrs := []string{freeAddr(t), freeAddr(t), freeAddr(t)}
	md := &quorum.Metadata{Version: 1, Brokers: map[int32]quorum.BrokerInfo{}, Topics: map[string]*quorum.TopicMeta{
		"rep": {Name: "rep", Partitions: []quorum.PartitionMeta{{Partition: 0, ShardID: 1000, Replicas: []int32{1, 2, 3}}}},
	}}
	for i, a := range addrs {
		md.Brokers[int32(i+1)] = quorum.BrokerInfo{NodeID: int32(i + 1), Host: "127.0.0.1", RaftAddr: a}
	}
	nodes := make([]*node, 3)
	start := func(i int) {
		// Snapshots by entries alone (no SnapshotInterval), so that the leader compacts within the test.
		nodes[i] = startNodeHost(t, uint64(i+1), filepath.Join(dir, fmt.Sprint(i+1)), addrs[i], Config{}, quorum.HostConfig{SnapshotInterval: -1})
		if err := nodes[i].mgr.Apply(md); err != nil {
			t.Fatal(err)
		}
	}
	for i := range nodes {
		start(i)
	}
	defer func() {
		for _, n := range nodes {
			if n != nil {
				n.close()
			}
		}
	}()
	leader := func() (int, *Partition) {
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			for i, n := range nodes {
				if n == nil || n.mgr == nil {
					continue
				}
				if p, ok := n.mgr.Partition("rep", 0); ok {
					if lead, _, _ := p.Leader(); lead && p.log.Load() != nil {
						return i, p
					}
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatal("no leader")
		return 0, nil
	}
	// produceRetry follows leadership changes (a loaded machine can delay
	// heartbeats past the election timeout); idempotence makes retries safe.
	produceRetry := func(batch []byte) error {
		deadline := time.Now().Add(30 * time.Second)
		for {
			_, p := leader()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := p.Produce(ctx, batch)
			cancel()
			if err == nil || time.Now().After(deadline) {
				return err
			}
			if err != kerr.NotLeaderForPartition && err != kerr.RequestTimedOut {
				return err
			}
		}
	}
	li, _ := leader()
	if err := produceRetry(makeBatch(99, 0, 0, 2, 100)); err != nil {
		t.Fatal(err)
	}

	// Stop a follower and produce well past SnapshotEntries (1000) so the
	// leader compacts the entries the follower misses.
	fi := (li + 1) % 3
	nodes[fi].close()
	nodes[fi] = nil
	const total, workers = 1400, 14
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < total/workers; i++ {
				if err := produceRetry(makeBatch(int64(w), 0, int32(i), 1, 100)); err != nil {
					errs <- err
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("produce with one follower down: %v", err)
	}

	start(fi)
	fp, _ := nodes[fi].mgr.Partition("rep", 0)
	_, lp := leader()
	want := lp.HighWatermark()
	deadline := time.Now().Add(60 * time.Second)
	for fp.HighWatermark() < want {
		if time.Now().After(deadline) {
			t.Fatalf("follower at %d, leader at %d after 60s", fp.HighWatermark(), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if fp.snapshotsInstalled.Load() == 0 {
		t.Fatal("the follower caught up without a snapshot: the test did not exercise the stream")
	}
	lh, fh := readAll(t, lp, 0), readAll(t, fp, 0)
	if len(lh) != len(fh) {
		t.Fatalf("leader has %d batches, follower %d", len(lh), len(fh))
	}
	for i := range lh {
		if lh[i] != fh[i] {
			t.Fatalf("batch %d differs: leader %+v, follower %+v", i, lh[i], fh[i])
		}
	}
	checkDense(t, fh, 0)
}
