package broker

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
)

// DiskGuard refuses writes before the file system holding the data directory is full (Redpanda's
// storage_min_free_bytes): Produce answers KAFKA_STORAGE_ERROR and CreateTopics/CreatePartitions an
// error while less than MinFree bytes would be left, so the space that remains keeps Raft's own writes
// (controller heartbeats, metadata, snapshots) possible and the broker up. A write that fails on a full
// disk is fatal in dragonboat (a LogDB write or a state machine Update returning an error panics), so
// this threshold, not error handling after the fact, is what keeps a broker alive on a filling disk.
//
// Free space is read with statfs every pollInterval; between reads, the bytes admitted are counted
// against it (twice: the Raft log and the segment may each hold a copy), so a fast producer cannot
// run far past the threshold before the next read. Writes resume by themselves once a read finds
// space again (retention, a deleted topic, an operator freeing space).
type DiskGuard struct {
	dir     string
	minFree int64
	// perPartition is what a new local partition reserves up front (LogDB file, first segment chunk),
	// counted when creating topics and partitions.
	perPartition int64
	log          *slog.Logger

	free     atomic.Int64 // bytes available to us at the last statfs
	admitted atomic.Int64 // bytes admitted since then
	low      atomic.Bool  // the last check found free space under minFree (for logging changes)
}

// DefaultMinFreeBytes is the threshold when none is configured: 1 GiB, but at most 5% of the file
// system (a 10 GiB disk keeps 512 MiB back).
func DefaultMinFreeBytes(total int64) int64 { return min(1<<30, total/20) }

const diskPollInterval = 500 * time.Millisecond

// NewDiskGuard reads dir's file system once. minFree < 0 takes DefaultMinFreeBytes; 0 turns the checks
// off. perPartition is the disk a new partition replica takes before holding data.
func NewDiskGuard(dir string, minFree, perPartition int64, logger *slog.Logger) (*DiskGuard, error) {
	if logger == nil {
		logger = slog.Default()
	}
	free, total, err := statDisk(dir)
	if err != nil {
		return nil, err
	}
	if minFree < 0 {
		minFree = DefaultMinFreeBytes(total)
	}
	g := &DiskGuard{dir: dir, minFree: minFree, perPartition: perPartition, log: logger}
	g.free.Store(free)
	return g, nil
}

// MinFree is the threshold in bytes (0: no checks).
func (g *DiskGuard) MinFree() int64 { return g.minFree }

// Run re-reads the free space every pollInterval until ctx ends.
func (g *DiskGuard) Run(ctx context.Context) {
	if g == nil || g.minFree == 0 {
		return
	}
	t := time.NewTicker(diskPollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		g.refresh()
	}
}

func (g *DiskGuard) refresh() {
	free, _, err := statDisk(g.dir)
	if err != nil {
		g.log.Warn("reading free disk space", "err", err)
		return
	}
	g.free.Store(free)
	g.admitted.Store(0)
	low := free < g.minFree
	if g.low.Swap(low) != low {
		if low {
			g.log.Warn("free disk space under the threshold: refusing produce and new partitions",
				"dir", g.dir, "free", free, "storage_min_free_bytes", g.minFree)
		} else {
			g.log.Info("free disk space back above the threshold: accepting writes", "dir", g.dir, "free", free)
		}
	}
}

// errLowDisk is KAFKA_STORAGE_ERROR with the numbers in its message.
type errLowDisk struct {
	free, need, minFree int64
}

func (e *errLowDisk) Error() string {
	return fmt.Sprintf("not enough free disk on this broker: %d bytes free, %d needed, %d kept free (storage-min-free-bytes)",
		e.free, e.need, e.minFree)
}

func (e *errLowDisk) Unwrap() error { return kerr.KafkaStorageError }

// errReplicaDiskLow is KAFKA_STORAGE_ERROR for a partition with a replica (or new replicas placed)
// on a broker whose disk is under its threshold (cluster.Agent.ReplicaDiskLow).
type errReplicaDiskLow struct{ broker int32 }

func (e *errReplicaDiskLow) Error() string {
	return fmt.Sprintf("broker %d, which holds or would hold a replica, is low on free disk space (storage-min-free-bytes)", e.broker)
}

func (e *errReplicaDiskLow) Unwrap() error { return kerr.KafkaStorageError }

// Low reports whether the disk has less free space than the threshold (counting the bytes admitted
// since the last read). Never true without a threshold.
func (g *DiskGuard) Low() bool {
	return g != nil && g.minFree != 0 && g.free.Load()-g.admitted.Load() < g.minFree
}

// admitWrite counts n bytes about to be proposed and refuses them if the disk would be left with less
// than the threshold. A nil guard admits everything.
func (g *DiskGuard) admitWrite(n int) error {
	if g == nil || g.minFree == 0 {
		return nil
	}
	need := 2 * int64(n)
	free := g.free.Load()
	if free-g.admitted.Add(need) < g.minFree {
		g.admitted.Add(-need)
		return &errLowDisk{free: free - g.admitted.Load(), need: need, minFree: g.minFree}
	}
	return nil
}

// admitPartitions refuses creating count partition replicas here if they would leave the disk under
// the threshold. It re-reads the disk: creating topics is rare, and it must not start on stale numbers.
func (g *DiskGuard) admitPartitions(count int) error {
	if g == nil || g.minFree == 0 || count <= 0 {
		return nil
	}
	g.refresh()
	free := g.free.Load() - g.admitted.Load()
	need := int64(count) * g.perPartition
	if free-need < g.minFree {
		return &errLowDisk{free: free, need: need, minFree: g.minFree}
	}
	return nil
}
