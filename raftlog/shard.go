package raftlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"

	pb "github.com/lni/dragonboat/v4/raftpb"

	"github.com/sluicebroker/sluice/segment"
)

// entryInfo is what the store keeps of one live Raft entry: its Raft fields and where its command
// is. A batch entry's command is its header (kept here) followed by the batch in the segment.
type entryInfo struct {
	term        uint64
	typ         pb.EntryType
	key         uint64
	clientID    uint64
	seriesID    uint64
	respondedTo uint64

	inSegment bool
	offset    int64 // base offset of the batch
	size      int32 // batch bytes
	delta     int32 // last offset delta
	headLen   uint8
	head      [maxHeaderLen]byte

	cmd []byte // inline command (not in the segment)
}

// recordSize is about the bytes of the entry's metadata record (for deciding rotation).
func (e *entryInfo) recordSize() int64 {
	return int64(entryFixedLen + recHeaderLen + int(e.headLen) + len(e.cmd))
}

// staleBatch says whether the entry holds a batch that is not stored because it was proposed in
// another term (proposedInTerm).
func (e *entryInfo) staleBatch() bool {
	if e.inSegment {
		return false
	}
	_, cmd, ok := entryCommand(e.typ, e.cmd)
	if !ok {
		return false
	}
	c, _, _, ok := StoredBatch(cmd)
	return ok && !proposedInTerm(c, e.term)
}

// next is the offset after the entry's batch.
func (e *entryInfo) next() int64 { return e.offset + int64(e.delta) + 1 }

// shard is one Raft replica's log: the metadata file and, for a partition, its segment.
type shard struct {
	id      uint64
	replica uint64
	logger  *slog.Logger

	opening sync.Once // open, at first use
	openErr error

	mu         sync.Mutex
	meta       *metaFile
	part       *PartitionSpec // nil: every command is kept inline (the controller, tests)
	seg        *segment.Log   // the partition's log; nil for inline shards
	state      pb.State
	snap       pb.Snapshot
	marker     uint64      // entries up to here are compacted (or covered by a received snapshot)
	markerTerm uint64      // term of the marker entry
	ents       []entryInfo // ents[i] is entry marker+1+i
	segBase    int64       // the segment's end when no live entry is in it
	awaiting   bool        // a received snapshot is not in the segment yet: batches stay inline
	scratch    []byte      // a batch being stamped with LogAppendTime
	liveBytes  int64       // approximate bytes of live records, to decide rotation
	segDirty   bool        // the segment took batches since the last sync
	// metaMust: the metadata holds records that must be durable before the save is acknowledged
	// and before any later batch reaches the segment (see save). Records of batches alone need
	// not be: the segment holds what they say (rebuild).
	metaMust bool
	pending  []pendingBatch // the batches of the save being written, in order
}

// testHookBeforeBatch, when set (tests), runs before save writes each batch into the segment.
var testHookBeforeBatch func(*shard)

// pendingBatch is a batch of the current save whose record is written and which the segment still
// has to take.
type pendingBatch struct {
	ent   int // index into ents
	cmd   Command
	batch []byte
	h     segment.Header
}

func (sh *shard) lastIndex() uint64 { return sh.marker + uint64(len(sh.ents)) }

// segNext is the offset the segment ends at if it holds exactly the live entries' batches.
func (sh *shard) segNext() int64 {
	for i := len(sh.ents) - 1; i >= 0; i-- {
		if sh.ents[i].inSegment {
			return sh.ents[i].next()
		}
	}
	return sh.segBase
}

// replay applies one metadata record read back at open.
func (sh *shard) replay(body []byte) error {
	be := binary.BigEndian
	typ, b := body[0], body[1:]
	switch typ {
	case recEntry:
		index, e, err := decodeEntry(b)
		if err != nil {
			return err
		}
		if index <= sh.marker {
			return nil
		}
		if index <= sh.lastIndex() {
			sh.ents = sh.ents[:index-sh.marker-1]
		} else if index != sh.lastIndex()+1 {
			return fmt.Errorf("raftlog: shard %d: entry %d after %d", sh.id, index, sh.lastIndex())
		}
		sh.ents = append(sh.ents, e)
	case recState:
		if len(b) < 24 {
			return errors.New("raftlog: short state record")
		}
		sh.state = pb.State{Term: be.Uint64(b), Vote: be.Uint64(b[8:]), Commit: be.Uint64(b[16:])}
	case recSnapshot:
		if len(b) < 1 {
			return errors.New("raftlog: short snapshot record")
		}
		var ss pb.Snapshot
		if err := ss.Unmarshal(b[1:]); err != nil {
			return err
		}
		if b[0] == 1 {
			sh.resetTo(ss)
		} else if ss.Index >= sh.snap.Index {
			sh.snap = ss
		}
	case recCompacted:
		if len(b) < 24 {
			return errors.New("raftlog: short compaction record")
		}
		sh.compact(be.Uint64(b), be.Uint64(b[8:]), int64(be.Uint64(b[16:])))
	case recInstalled:
		if len(b) < 16 {
			return errors.New("raftlog: short install record")
		}
		if be.Uint64(b) == sh.marker { // the install of the snapshot saved last
			sh.awaiting = false
			sh.segBase = int64(be.Uint64(b[8:]))
		}
	default:
		return fmt.Errorf("raftlog: unknown record type %d", typ)
	}
	return nil
}

// resetTo makes a received snapshot the start of the log: every entry goes, and a partition's
// segment waits for the state machine to install the snapshot's segments (ReplaceLog).
func (sh *shard) resetTo(ss pb.Snapshot) {
	sh.snap = ss
	sh.ents = sh.ents[:0]
	sh.marker, sh.markerTerm = ss.Index, ss.Term
	sh.awaiting = sh.part != nil
}

// compact drops the entries up to index; segNext is the segment offset after them (recorded so
// that an empty live set still knows where the segment ends).
func (sh *shard) compact(index, term uint64, segNext int64) {
	if index <= sh.marker {
		sh.segBase = max(sh.segBase, segNext)
		return
	}
	n := min(index-sh.marker, uint64(len(sh.ents)))
	for i := uint64(0); i < n; i++ {
		if sh.ents[i].inSegment {
			sh.segBase = sh.ents[i].next()
		}
	}
	sh.segBase = max(sh.segBase, segNext)
	sh.ents = append(sh.ents[:0], sh.ents[n:]...)
	sh.marker, sh.markerTerm = index, term
}

// reconcile makes the segment and the metadata agree after a crash: whichever is ahead is cut
// back to what both hold. Both are written before either is fsynced, and a save is acknowledged
// only after both fsyncs, so nothing cut was ever acknowledged.
func (sh *shard) reconcile() error {
	if sh.seg == nil || sh.awaiting {
		return nil
	}
	have := sh.seg.NextOffset()
	if want := sh.segNext(); have < want {
		i := 0
		for i < len(sh.ents) && !(sh.ents[i].inSegment && sh.ents[i].next() > have) {
			i++
		}
		sh.logger.Warn("raft log entries without their batch in the segment; cutting them",
			"first_index", sh.marker+1+uint64(i), "last_index", sh.lastIndex(), "segment_next", have, "wanted", want)
		sh.ents = sh.ents[:i]
	}
	if want := sh.segNext(); have > want {
		rebuilt, err := sh.rebuild(want, have)
		if err != nil {
			return err
		}
		if want = sh.segNext(); have > want {
			sh.logger.Info("segment holds batches past the raft log; cutting them", "segment_next", have, "raft_log_next", want, "entries_rebuilt", rebuilt)
			if err := sh.seg.TruncateTo(want); err != nil {
				return fmt.Errorf("raftlog: shard %d: cut segment to %d: %w", sh.id, want, err)
			}
		} else {
			sh.logger.Info("raft log entries rebuilt from the segment", "entries", rebuilt, "last_index", sh.lastIndex())
		}
	}
	if last := max(sh.lastIndex(), sh.snap.Index); sh.state.Commit > last {
		sh.state.Commit = last
	}
	return nil
}

// rebuild appends the entries whose batches the segment holds in [from, to) past the records: their
// records were not yet durable when the machine stopped (save). Each batch is the next entry and
// its term is the batch's leader epoch. What only the record kept is rebuilt: the command header
// (KindBatch; FlagLogAppendTime from the batch's attributes; the append time the batch's own with
// LogAppendTime, else the previous entry's, the proposer's clock within metaSyncMaxAge of it;
// proposal number 0: no leader of that term runs any more) and dragonboat's client fields (0: no
// session). It stops at a batch that cannot be the next entry (a term going back, or past the
// Raft state's); the caller cuts the segment there. The rebuilt records are made durable.
func (sh *shard) rebuild(from, to int64) (int, error) {
	appendTime, haveTime := sh.lastAppendTime()
	n := 0
	for off := from; off < to; {
		h, err := sh.batchHeaderAt(off)
		if err != nil || h.BaseOffset != off {
			break
		}
		term := uint64(h.PartitionLeaderEpoch)
		if h.PartitionLeaderEpoch < 0 || term > sh.state.Term || term < sh.lastTerm() {
			break
		}
		c := Command{Kind: KindBatch, Epoch: h.PartitionLeaderEpoch, AppendTime: appendTime}
		if h.HasLogAppendTime() || !haveTime {
			c.AppendTime = h.MaxTimestamp
		}
		if h.HasLogAppendTime() {
			c.Flags |= FlagLogAppendTime
		}
		info := entryInfo{term: term, typ: pb.EncodedEntry, inSegment: true, offset: off, size: int32(h.Size()), delta: h.LastOffsetDelta}
		head := append([]byte{encodedPlain}, AppendCommand(nil, c, nil)...)
		info.headLen = uint8(len(head))
		copy(info.head[:], head)
		sh.meta.addEntry(sh.lastIndex()+1, &info)
		sh.liveBytes += info.recordSize()
		sh.ents = append(sh.ents, info)
		off = info.next()
		n++
	}
	if n == 0 {
		return 0, nil
	}
	if err := sh.meta.flush(); err != nil {
		return n, err
	}
	return n, sh.meta.sync()
}

// batchHeaderAt reads the header of the segment's batch at offset.
func (sh *shard) batchHeaderAt(offset int64) (segment.Header, error) {
	r, err := sh.seg.Read(offset, 0)
	if err != nil {
		return segment.Header{}, err
	}
	defer r.Release()
	if len(r.Ranges) == 0 || r.Ranges[0].Len < segment.HeaderSize {
		return segment.Header{}, fmt.Errorf("raftlog: shard %d: no batch at %d", sh.id, offset)
	}
	var hb [segment.HeaderSize]byte
	if _, err := r.Ranges[0].File.ReadAt(hb[:], r.Ranges[0].Pos); err != nil {
		return segment.Header{}, err
	}
	return segment.ParseHeader(hb[:])
}

// lastTerm is the term of the last entry (or of the compaction marker).
func (sh *shard) lastTerm() uint64 {
	if len(sh.ents) == 0 {
		return sh.markerTerm
	}
	return sh.ents[len(sh.ents)-1].term
}

// lastAppendTime is the append time in the command header of the last entry that has one.
func (sh *shard) lastAppendTime() (int64, bool) {
	for i := len(sh.ents) - 1; i >= 0; i-- {
		e := &sh.ents[i]
		cmd := e.cmd
		if e.inSegment {
			cmd = e.head[:e.headLen]
		}
		if _, cmd, ok := entryCommand(e.typ, cmd); ok {
			if c, _, ok := ParseCommand(cmd); ok {
				return c.AppendTime, true
			}
		}
	}
	return 0, false
}

// save writes one update's snapshot, entries and state (not yet fsynced). It reports whether the
// update must be fsynced before it is acknowledged (as tan: entries, snapshots, term or vote).
//
// The segment is fsynced with every save that wrote batches; the metadata only when the save holds
// something the segment cannot tell again: a snapshot, a new term or vote, an entry without a batch,
// an overridden suffix (metaMust), or once its unsynced records are metaSyncMaxAge old. A record
// that describes a batch is written (into the page cache) before its batch, and any record that
// must be durable is fsynced before a later batch is written; so after a crash the segment's batches
// past the durable records are, in order, the entries after them (rebuild), and a kill -9 (which
// keeps the page cache) leaves no batch without its record. An overridden suffix is cut from the
// segment durably before the records that replace it, so no record ever names the old batches' bytes.
func (sh *shard) save(u *pb.Update) (bool, error) {
	sync := false
	if !pb.IsEmptySnapshot(u.Snapshot) {
		if err := sh.meta.addSnapshot(u.Snapshot, true); err != nil {
			return false, err
		}
		sh.resetTo(u.Snapshot)
		sync, sh.metaMust = true, true
	}
	if len(u.EntriesToSave) > 0 {
		first := u.EntriesToSave[0].Index
		switch last := sh.lastIndex(); {
		case first <= sh.marker:
			return false, fmt.Errorf("raftlog: shard %d: entry %d at or below the compacted index %d", sh.id, first, sh.marker)
		case first <= last:
			if err := sh.truncateFrom(first); err != nil {
				return false, err
			}
			sh.metaMust = true
		case first != last+1:
			return false, fmt.Errorf("raftlog: shard %d: entry %d after %d", sh.id, first, last)
		}
		sh.pending = sh.pending[:0]
		next := int64(0)
		if sh.seg != nil {
			next = sh.seg.NextOffset()
		}
		for i := range u.EntriesToSave {
			next = sh.appendEntry(&u.EntriesToSave[i], next)
		}
		sync = true
	}
	if !pb.IsEmptyState(u.State) && !pb.IsStateEqual(u.State, sh.state) {
		if u.State.Term != sh.state.Term || u.State.Vote != sh.state.Vote {
			sync, sh.metaMust = true, true
		}
		sh.state = u.State
		sh.meta.addState(u.State)
	}
	if len(sh.pending) == 0 {
		return sync, nil
	}
	// The records first (and durable first when they must be), then the batches they describe.
	if err := sh.meta.flush(); err != nil {
		return false, err
	}
	if sh.metaMust {
		if err := sh.meta.sync(); err != nil {
			return false, err
		}
		sh.metaMust = false
	}
	for k := range sh.pending {
		w := &sh.pending[k]
		if testHookBeforeBatch != nil {
			testHookBeforeBatch(sh)
		}
		if err := sh.writeBatch(&sh.ents[w.ent], sh.marker+1+uint64(w.ent), w.cmd, w.batch, w.h); err != nil {
			return false, err
		}
		*w = pendingBatch{}
	}
	sh.pending = sh.pending[:0]
	return sync, nil
}

// truncateFrom drops the entries from index on (a new leader's log overrides them), with their
// batches: they were never committed, so no reader has seen them.
func (sh *shard) truncateFrom(index uint64) error {
	k := index - sh.marker - 1
	sh.logger.Info("raft log suffix overridden by the leader's", "from_index", index, "to_index", sh.lastIndex())
	if sh.seg != nil {
		for i := k; i < uint64(len(sh.ents)); i++ {
			if sh.ents[i].inSegment {
				if err := sh.seg.TruncateTo(sh.ents[i].offset); err != nil {
					return fmt.Errorf("raftlog: shard %d: truncate segment to %d: %w", sh.id, sh.ents[i].offset, err)
				}
				// Durable before the records of the entries that replace them (save).
				if err := sh.seg.SyncData(); err != nil {
					return fmt.Errorf("raftlog: shard %d: sync segment cut at %d: %w", sh.id, sh.ents[i].offset, err)
				}
				break
			}
		}
	}
	sh.ents = sh.ents[:k]
	return nil
}

// appendEntry records e, whose batch (if it has one the segment takes) will be at offset next:
// the batch is queued in sh.pending and written once the records are (save). It returns the
// offset after it.
func (sh *shard) appendEntry(e *pb.Entry, next int64) int64 {
	info := entryInfo{term: e.Term, typ: e.Type, key: e.Key, clientID: e.ClientID, seriesID: e.SeriesID, respondedTo: e.RespondedTo}
	stored := false
	if sh.seg != nil && !sh.awaiting {
		if prefix, cmd, ok := entryCommand(info.typ, e.Cmd); ok {
			if c, batch, h, ok := StoredBatch(cmd); ok && proposedInTerm(c, info.term) {
				stored = true
				info.inSegment = true
				info.offset, info.size, info.delta = next, int32(len(batch)), h.LastOffsetDelta
				info.headLen = uint8(prefix + headerLen(cmd))
				copy(info.head[:], e.Cmd[:info.headLen])
				sh.pending = append(sh.pending, pendingBatch{ent: len(sh.ents), cmd: c, batch: batch, h: h})
				next = info.next()
			}
		}
	}
	if !stored {
		info.cmd = append([]byte(nil), e.Cmd...)
		sh.metaMust = true // the segment cannot tell this entry again
	}
	sh.meta.addEntry(e.Index, &info)
	sh.liveBytes += info.recordSize()
	sh.ents = append(sh.ents, info)
	return next
}

// entryCommand finds the application command in a Raft entry's Cmd: dragonboat proposes
// non-empty commands as encoded entries, one header byte (0: format 0, no compression, no
// session) before the command. It returns the length of that prefix.
func entryCommand(typ pb.EntryType, raw []byte) (prefix int, cmd []byte, ok bool) {
	switch {
	case typ == pb.ApplicationEntry:
		return 0, raw, true
	case typ == pb.EncodedEntry && len(raw) > 0 && raw[0] == encodedPlain:
		return 1, raw[1:], true
	}
	return 0, nil, false
}

// encodedPlain is dragonboat's encoded-entry header for an uncompressed command without session.
const encodedPlain = 0

// storeBatch writes the entry's batch, if it holds one, to the segment and fills in where.
func (sh *shard) storeBatch(info *entryInfo, index uint64, raw []byte) (bool, error) {
	prefix, cmd, ok := entryCommand(info.typ, raw)
	if !ok {
		return false, nil
	}
	c, batch, h, ok := StoredBatch(cmd)
	if !ok || !proposedInTerm(c, info.term) {
		return false, nil
	}
	if err := sh.writeBatch(info, index, c, batch, h); err != nil {
		return false, err
	}
	info.headLen = uint8(prefix + headerLen(cmd))
	copy(info.head[:], raw[:info.headLen])
	return true, nil
}

// writeBatch appends the entry's batch to the segment with its final header fields: the base
// offset follows from the log before it and the leader epoch is the entry's term, so every replica
// writes the same bytes.
func (sh *shard) writeBatch(info *entryInfo, index uint64, c Command, batch []byte, h segment.Header) error {
	epoch := int32(min(info.term, math.MaxInt32))
	if c.Flags&FlagLogAppendTime != 0 {
		sh.scratch = append(sh.scratch[:0], batch...)
		segment.SetLogAppendTime(sh.scratch, c.AppendTime)
		batch = sh.scratch
	}
	planned := info.inSegment
	base, err := sh.seg.AppendWithEpoch(batch, epoch)
	if cap(sh.scratch) > 64<<10 {
		sh.scratch = nil
	}
	if err != nil {
		return fmt.Errorf("raftlog: shard %d: append entry %d to %s: %w", sh.id, index, sh.seg.Dir(), err)
	}
	if planned && base != info.offset {
		return fmt.Errorf("raftlog: shard %d: entry %d went to offset %d, its record says %d", sh.id, index, base, info.offset)
	}
	info.inSegment = true
	info.offset, info.size, info.delta = base, int32(len(batch)), h.LastOffsetDelta
	sh.segDirty = true
	return nil
}

// entries appends entries [low, high) to ents up to maxSize bytes (at least one), as tan does:
// nothing when low is compacted.
func (sh *shard) entries(ents []pb.Entry, size uint64, low, high, maxSize uint64) ([]pb.Entry, uint64, error) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if low <= sh.marker {
		return ents, size, nil
	}
	if maxSize == 0 {
		maxSize = math.MaxUint64
	}
	for idx := low; idx < high && idx <= sh.lastIndex(); idx++ {
		info := &sh.ents[idx-sh.marker-1]
		e := pb.Entry{Term: info.term, Index: idx, Type: info.typ, Key: info.key, ClientID: info.clientID,
			SeriesID: info.seriesID, RespondedTo: info.respondedTo, Cmd: info.cmd}
		if info.inSegment {
			cmd, err := sh.readCommand(info)
			if err != nil {
				return nil, 0, err
			}
			e.Cmd = cmd
		}
		size += uint64(e.SizeUpperLimit())
		ents = append(ents, e)
		if size > maxSize {
			break
		}
	}
	return ents, size, nil
}

// readCommand rebuilds a batch entry's command: its header, then the batch read back from the
// segment (with its final base offset and epoch, which a follower sets again to the same values).
func (sh *shard) readCommand(info *entryInfo) ([]byte, error) {
	hl := int(info.headLen)
	cmd := make([]byte, hl+int(info.size))
	copy(cmd, info.head[:hl])
	r, err := sh.seg.Read(info.offset, 0)
	if err != nil {
		return nil, fmt.Errorf("raftlog: shard %d: read batch at %d: %w", sh.id, info.offset, err)
	}
	defer r.Release()
	if len(r.Ranges) == 0 || r.Ranges[0].Len < int64(info.size) {
		return nil, fmt.Errorf("raftlog: shard %d: batch at %d is missing from the segment", sh.id, info.offset)
	}
	if _, err := r.Ranges[0].File.ReadAt(cmd[hl:], r.Ranges[0].Pos); err != nil {
		return nil, fmt.Errorf("raftlog: shard %d: read batch at %d: %w", sh.id, info.offset, err)
	}
	return cmd, nil
}

// rotationDue says whether the metadata file has grown enough past its live content to be
// rewritten.
func (sh *shard) rotationDue() bool {
	return sh.meta.size() > 256<<10 && sh.meta.size() > 4*sh.liveBytes
}

// rotate rewrites the live state into a new metadata file.
func (sh *shard) rotate() error {
	m := &metaFile{}
	if !pb.IsEmptySnapshot(sh.snap) {
		if err := m.addSnapshot(sh.snap, false); err != nil {
			return err
		}
	}
	m.addCompacted(sh.marker, sh.markerTerm, sh.segBase)
	if sh.awaiting {
		// Keep waiting for the install after a restart: the received snapshot again, as received.
		if err := m.addSnapshot(sh.snap, true); err != nil {
			return err
		}
	}
	if !pb.IsEmptyState(sh.state) {
		m.addState(sh.state)
	}
	for i := range sh.ents {
		m.addEntry(sh.marker+1+uint64(i), &sh.ents[i])
	}
	sh.liveBytes = int64(len(m.buf))
	sh.meta.buf = sh.meta.buf[:0] // all in the new picture
	return sh.meta.rotate(m.buf)
}

// materialize ends a wait for a snapshot: it records the install, writes the batches of the entries
// saved meanwhile (inline until now) into the segment, rewrites their records and makes it all
// durable. Callers hold sh.mu and have set segBase.
func (sh *shard) materialize() error {
	sh.meta.addInstalled(sh.marker, sh.segBase)
	for i := range sh.ents {
		e := &sh.ents[i]
		if !e.inSegment {
			stored, err := sh.storeBatch(e, sh.marker+1+uint64(i), e.cmd)
			if err != nil {
				return err
			}
			if stored {
				e.cmd = nil
			}
		}
		sh.meta.addEntry(sh.marker+1+uint64(i), e)
	}
	if err := sh.meta.flush(); err != nil {
		return err
	}
	if err := sh.seg.SyncData(); err != nil {
		return err
	}
	sh.segDirty = false
	return sh.meta.sync()
}
