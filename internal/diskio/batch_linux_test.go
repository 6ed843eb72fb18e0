//go:build linux

package diskio

import (
	"testing"

	"github.com/sluicebroker/sluice/internal/uring"
)

const syncRingEntriesForTest = syncRingEntries

// Where io_uring runs, DatasyncAll takes the ring (and keeps it for the next call).
func TestDatasyncAllUsesTheRing(t *testing.T) {
	if err := uring.Probe(uring.OpFsync); err != nil {
		t.Skip(err)
	}
	if err := DatasyncAll(openFiles(t, 2), nil); err != nil {
		t.Fatal(err)
	}
	syncRings.mu.Lock()
	defer syncRings.mu.Unlock()
	if syncRings.unavailable || len(syncRings.idle) == 0 {
		t.Fatalf("no ring after a sync: unavailable %v, %d idle", syncRings.unavailable, len(syncRings.idle))
	}
}
