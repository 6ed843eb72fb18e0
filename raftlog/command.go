package raftlog

import (
	"encoding/binary"

	"github.com/sluicebroker/sluice/segment"
)

// A partition's Raft entry is a command: a header, then (for the batch kinds) a Kafka record batch
// v2 whose broker-owned fields are not yet set. The Store writes the batch of every entry it can
// parse into the partition's segment, so the kinds and the header are this package's to define;
// the replica gives the flags their meaning.
//
//	[0]      kind
//	[1]      flags (FlagLogAppendTime; the replica's own bits)
//	[2:6]    partition leader epoch: the proposer's Raft term at proposal time
//	[6:14]   append time, Unix ms, from the proposer's clock (Update may not read a clock)
//	[14:22]  proposal number (KindBatch only): the proposer's count, so that a leader can tell
//	         which of its proposals an applied entry is
//	[hdr:]   the record batch v2
const (
	// KindBatchV1 is the first format, without the proposal number (logs written before it).
	KindBatchV1 byte = 1
	// KindBatch carries the proposal number.
	KindBatch byte = 2
	// KindBarrier is a header alone: a leader's marker in its own log (applied, every proposal it
	// made before is applied or never will be).
	KindBarrier byte = 3

	// FlagLogAppendTime: the topic stamps batches with the broker's time (the append time above).
	FlagLogAppendTime byte = 1 << 0

	headerLenV1 = 14
	// HeaderLen is the length of a KindBatch header.
	HeaderLen = 22
	// maxHeaderLen bounds the header kept beside a stored batch: dragonboat's encoded-entry byte
	// and the command header.
	maxHeaderLen = 1 + HeaderLen
)

// Command is a decoded command header.
type Command struct {
	Kind       byte
	Flags      byte
	Epoch      int32
	AppendTime int64
	Proposal   uint64
}

// AppendCommand appends the command for batch to dst; a KindBarrier command takes no batch.
func AppendCommand(dst []byte, c Command, batch []byte) []byte {
	kind := KindBatch
	if c.Kind == KindBarrier {
		kind = KindBarrier
	}
	dst = append(dst, kind, c.Flags)
	dst = binary.BigEndian.AppendUint32(dst, uint32(c.Epoch))
	dst = binary.BigEndian.AppendUint64(dst, uint64(c.AppendTime))
	dst = binary.BigEndian.AppendUint64(dst, c.Proposal)
	return append(dst, batch...)
}

// ParseCommand splits a command into its header and batch; ok is false when cmd is not a batch
// command (too short, unknown kind).
func ParseCommand(cmd []byte) (c Command, batch []byte, ok bool) {
	if len(cmd) < headerLenV1 {
		return Command{}, nil, false
	}
	c.Kind, c.Flags = cmd[0], cmd[1]
	c.Epoch = int32(binary.BigEndian.Uint32(cmd[2:]))
	c.AppendTime = int64(binary.BigEndian.Uint64(cmd[6:]))
	switch c.Kind {
	case KindBatchV1:
		return c, cmd[headerLenV1:], true
	case KindBatch, KindBarrier:
		if len(cmd) < HeaderLen {
			return Command{}, nil, false
		}
		c.Proposal = binary.BigEndian.Uint64(cmd[14:])
		return c, cmd[HeaderLen:], true
	}
	return Command{}, nil, false
}

// headerLen is the length of cmd's header (cmd parsed by ParseCommand).
func headerLen(cmd []byte) int {
	if cmd[0] == KindBatchV1 {
		return headerLenV1
	}
	return HeaderLen
}

// proposedInTerm says whether a batch command was proposed in the term of the entry that holds it.
// A KindBatch entry appended in another term came from a proposer whose leadership ended before
// Raft appended it (a proposal still queued when its node lost and then regained leadership, or
// one forwarded to the next leader). It is not stored and holds no offsets: its proposer answers
// it NOT_LEADER. Storing it could land it after a batch of the same producer that Raft dropped
// meanwhile, leaving a gap in the producer's sequences that its retries could never fill; a batch
// only takes offsets in the term that admitted it (replica/admission.go). KindBatchV1 entries
// (logs written before the proposal number) keep the old rule: stored whatever their term.
func proposedInTerm(c Command, term uint64) bool {
	return c.Kind != KindBatch || uint64(c.Epoch) == term
}

// StoredBatch says whether a partition entry's command goes to the segment, and returns its batch
// and header: a batch command whose batch parses as exactly one whole batch. Every replica decides
// the same from the same bytes; the state machine uses it to know which entries hold offsets.
func StoredBatch(cmd []byte) (c Command, batch []byte, h segment.Header, ok bool) {
	c, batch, ok = ParseCommand(cmd)
	if !ok || c.Kind != KindBatch && c.Kind != KindBatchV1 {
		return Command{}, nil, segment.Header{}, false
	}
	h, err := segment.ParseHeader(batch)
	if err != nil || h.Size() != len(batch) || h.LastOffsetDelta < 0 {
		return Command{}, nil, segment.Header{}, false
	}
	return c, batch, h, true
}
