package quorum

import (
	_ "unsafe" // go:linkname

	_ "github.com/lni/dragonboat/v4" // the variables below live there
)

// dragonboat preallocates every shard's queues at their full length when the shard starts: the
// receive queue (two slices of ReceiveQueueLength raftpb.Message), the proposal queue (two of
// IncomingProposalQueueLength raftpb.Entry), the ReadIndex queue (two of
// IncomingReadIndexQueueLength pointers) and one math/rand source (4.9 KB) per pending-proposal
// shard; the in-memory Raft log takes a slice of InMemEntrySliceSize entries once anything applied.
// With its defaults that is ~0.85 MiB per partition before anything is written (a raftpb.Message
// is 312 bytes, an Entry 84): 8.5 GiB at 10,000 partitions (issue 14).
//
// The lengths are "soft settings" that dragonboat reads only from dragonboat-soft-settings.json in
// the working directory, and copies into these package variables during its initialisation;
// nothing in its API sets them. They are read each time a NodeHost or a shard starts, so they are
// set here, in this package's init, which runs after dragonboat's and before any Host exists.
// (Go restricts go:linkname only for the standard library's symbols; a dragonboat upgrade that
// renames one of them is caught by TestDragonboatQueueLengths, which reads the defaults back.)
//
// The lengths chosen bound what may wait for one shard between two of its steps (a step drains
// all of them, and a shard is stepped as soon as something arrives): Kafka clients keep at most 5
// produce requests in flight per connection, each one proposal per partition, so 128 proposals
// per partition is ~25 producer connections bursting at once; past it a proposal fails with
// ErrBusy (REQUEST_TIMED_OUT, retriable). A full receive queue drops Raft messages, which Raft resends.

//go:linkname dragonboatReceiveQueueLen github.com/lni/dragonboat/v4.receiveQueueLen
var dragonboatReceiveQueueLen uint64

//go:linkname dragonboatProposalQueueLen github.com/lni/dragonboat/v4.incomingProposalsMaxLen
var dragonboatProposalQueueLen uint64

//go:linkname dragonboatReadIndexQueueLen github.com/lni/dragonboat/v4.incomingReadIndexMaxLen
var dragonboatReadIndexQueueLen uint64

//go:linkname dragonboatPendingProposalShards github.com/lni/dragonboat/v4.pendingProposalShards
var dragonboatPendingProposalShards uint64

//go:linkname dragonboatEntrySliceLen github.com/lni/dragonboat/v4/internal/raft.entrySliceSize
var dragonboatEntrySliceLen uint64

//go:linkname dragonboatMinEntrySliceFree github.com/lni/dragonboat/v4/internal/raft.minEntrySliceSize
var dragonboatMinEntrySliceFree uint64

// Queue lengths per shard (dragonboat's defaults in brackets).
const (
	receiveQueueLen       = 64  // [1024] Raft messages (and ticks) received and not yet stepped
	proposalQueueLen      = 128 // [2048] proposals not yet stepped
	readIndexQueueLen     = 64  // [4096] ReadIndex requests not yet stepped (a few per second)
	pendingProposalShards = 1   // [16] lock shards of the pending-proposal map (one rand source each)
	entrySliceLen         = 64  // [512] capacity of a new in-memory Raft log slice (grows by append)
	minEntrySliceFree     = 16  // [96] free capacity below which that slice is replaced
)

// dragonboatQueueLengths are the variables above, in the order of sluiceQueueLengths.
func dragonboatQueueLengths() [6]uint64 {
	return [6]uint64{dragonboatReceiveQueueLen, dragonboatProposalQueueLen, dragonboatReadIndexQueueLen,
		dragonboatPendingProposalShards, dragonboatEntrySliceLen, dragonboatMinEntrySliceFree}
}

var sluiceQueueLengths = [6]uint64{receiveQueueLen, proposalQueueLen, readIndexQueueLen,
	pendingProposalShards, entrySliceLen, minEntrySliceFree}

// dragonboatDefaults are dragonboat's values, as its initialisation left them.
var dragonboatDefaults = dragonboatQueueLengths()

func init() {
	dragonboatReceiveQueueLen = receiveQueueLen
	dragonboatProposalQueueLen = proposalQueueLen
	dragonboatReadIndexQueueLen = readIndexQueueLen
	dragonboatPendingProposalShards = pendingProposalShards
	dragonboatEntrySliceLen = entrySliceLen
	dragonboatMinEntrySliceFree = minEntrySliceFree
}
