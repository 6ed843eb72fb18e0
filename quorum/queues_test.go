package quorum

import "testing"

// TestDragonboatQueueLengths proves that the go:linkname variables in queues.go are dragonboat's
// own: before this package's init they held dragonboat's defaults (a renamed or removed variable
// would leave a fresh zero variable here, and the queues at their defaults), and now they hold
// Sluice's lengths. Fails after a dragonboat upgrade that changes them: re-check queues.go then.
func TestDragonboatQueueLengths(t *testing.T) {
	// dragonboat's defaults (internal/settings/soft.go): ReceiveQueueLength,
	// IncomingProposalQueueLength, IncomingReadIndexQueueLength, PendingProposalShards,
	// InMemEntrySliceSize, MinEntrySliceFreeSize.
	want := [6]uint64{1024, 2048, 4096, 16, 512, 96}
	if dragonboatDefaults != want {
		t.Fatalf("dragonboat's queue lengths before init: %v, want its defaults %v "+
			"(a dragonboat-soft-settings.json in the working directory, or renamed variables?)",
			dragonboatDefaults, want)
	}
	if got := dragonboatQueueLengths(); got != sluiceQueueLengths {
		t.Fatalf("queue lengths now %v, want %v", got, sluiceQueueLengths)
	}
}
