package segment

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
)

// The checkpoint lives in two slot files written in turn, each CRC-protected with a sequence
// number, so a torn write spoils only the slot being written.
//
// Sync fdatasyncs the new slot at the same time as the data, not after it (one disk round trip
// instead of two), so a crash may leave a durable checkpoint ahead of the durable data. Open
// therefore takes the newest intact slot whose NextOffset the recovered log reaches: all batches
// below it passed CRC, so the state it describes is there. The other slot was written by the
// previous, completed Sync, so it is always consistent with the data when the newest is not.
//
// Slot layout (big-endian): magic "SLCK" | version u32 | seq u64 | applied index u64 |
// next offset i64 | extra length u32 | extra | CRC-32C of everything before it.
const (
	ckptMagic      = "SLCK"
	ckptVersion    = 1
	ckptHeaderSize = 4 + 4 + 8 + 8 + 8 + 4
	ckptMaxExtra   = 1 << 30
)

var ckptNames = [2]string{"checkpoint.0", "checkpoint.1"}

// A checkpoint slot file is open only while it is written (stage to commit): a partition keeps
// no descriptor for it otherwise (thousands of idle partitions would hold two each).
type checkpointFile struct {
	dir     string
	writing *os.File      // the staged slot, open from stage to commit
	found   [2]Checkpoint // intact contents found at open
	seqs    [2]uint64
	intact  [2]bool
	seq     uint64 // highest sequence number seen or written
	last    int    // slot of the checkpoint in force, -1 if none
	staged  int    // slot written by stage, waiting for commit
	buf     []byte
	pending bool
}

// openCheckpoint creates the slot files if missing (so that they exist, and become durable with
// the directory's next fsync, before any checkpoint is written into them) and reads what they hold.
func openCheckpoint(dir string) (*checkpointFile, error) {
	c := &checkpointFile{dir: dir, last: -1}
	for i, name := range ckptNames {
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, err
		}
		cp, seq, rerr := readSlot(f)
		if err := f.Close(); err != nil {
			return nil, err
		}
		if rerr == nil {
			c.found[i], c.seqs[i], c.intact[i] = cp, seq, true
			c.seq = max(c.seq, seq)
		}
	}
	return c, nil
}

// choose returns the newest intact checkpoint that the log, recovered up to next, satisfies, and
// makes it the one in force.
func (c *checkpointFile) choose(next int64) Checkpoint {
	for i := range ckptNames {
		if c.intact[i] && c.found[i].NextOffset <= next && (c.last < 0 || c.seqs[i] > c.seqs[c.last]) {
			c.last = i
		}
	}
	if c.last < 0 {
		return Checkpoint{}
	}
	cp := c.found[c.last]
	c.found = [2]Checkpoint{}
	return cp
}

var errBadSlot = errors.New("segment: checkpoint slot damaged")

func readSlot(f *os.File) (Checkpoint, uint64, error) {
	b, err := os.ReadFile(f.Name())
	if err != nil {
		return Checkpoint{}, 0, err
	}
	if len(b) < ckptHeaderSize+4 || string(b[:4]) != ckptMagic ||
		binary.BigEndian.Uint32(b[4:]) != ckptVersion {
		return Checkpoint{}, 0, errBadSlot
	}
	n := int(binary.BigEndian.Uint32(b[32:]))
	if n > ckptMaxExtra || ckptHeaderSize+n+4 > len(b) {
		return Checkpoint{}, 0, errBadSlot
	}
	body := b[:ckptHeaderSize+n]
	if crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(b[len(body):]) {
		return Checkpoint{}, 0, errBadSlot
	}
	cp := Checkpoint{
		AppliedIndex: binary.BigEndian.Uint64(b[16:]),
		NextOffset:   int64(binary.BigEndian.Uint64(b[24:])),
	}
	if n > 0 {
		cp.Extra = append([]byte(nil), b[ckptHeaderSize:ckptHeaderSize+n]...)
	}
	return cp, binary.BigEndian.Uint64(b[8:]), nil
}

// stage writes cp (not yet durable) into the slot not holding the checkpoint in force.
func (c *checkpointFile) stage(cp Checkpoint) error {
	if len(cp.Extra) > ckptMaxExtra {
		return fmt.Errorf("segment: checkpoint extra of %d bytes is too large", len(cp.Extra))
	}
	slot := 0
	if c.last == 0 {
		slot = 1
	}
	c.seq++
	need := ckptHeaderSize + len(cp.Extra) + 4
	if cap(c.buf) < need {
		c.buf = make([]byte, need)
	}
	b := c.buf[:need]
	copy(b, ckptMagic)
	binary.BigEndian.PutUint32(b[4:], ckptVersion)
	binary.BigEndian.PutUint64(b[8:], c.seq)
	binary.BigEndian.PutUint64(b[16:], cp.AppliedIndex)
	binary.BigEndian.PutUint64(b[24:], uint64(cp.NextOffset))
	binary.BigEndian.PutUint32(b[32:], uint32(len(cp.Extra)))
	copy(b[ckptHeaderSize:], cp.Extra)
	binary.BigEndian.PutUint32(b[need-4:], crc32.Checksum(b[:need-4], castagnoli))
	c.closeWriting() // a stage whose commit never came
	f, err := os.OpenFile(filepath.Join(c.dir, ckptNames[slot]), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(b, 0); err != nil {
		f.Close()
		return err
	}
	c.writing, c.staged, c.pending = f, slot, true
	return nil
}

// commit makes the staged slot durable; it is then the checkpoint in force.
func (c *checkpointFile) commit() error {
	if !c.pending {
		return nil
	}
	err := datasync(c.writing)
	if cerr := c.closeWriting(); err == nil {
		err = cerr
	}
	if err != nil {
		c.pending = false // stage writes the slot again next time
		return err
	}
	c.last, c.pending = c.staged, false
	return nil
}

func (c *checkpointFile) closeWriting() error {
	if c.writing == nil {
		return nil
	}
	err := c.writing.Close()
	c.writing = nil
	return err
}

func (c *checkpointFile) close() { c.closeWriting() }
