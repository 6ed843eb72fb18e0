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
// number: a torn write spoils only the slot being written, and Open takes the newest intact one.
// One pwrite plus one fdatasync per checkpoint, no rename or directory sync.
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

type checkpointFile struct {
	slots [2]*os.File
	seq   uint64 // of the newest intact slot; the next write uses seq+1 in the other slot
	last  int    // index of that slot, -1 if none
	buf   []byte
}

// openCheckpoint opens (creating) the slot files and returns the newest intact checkpoint.
func openCheckpoint(dir string) (*checkpointFile, Checkpoint, error) {
	c := &checkpointFile{last: -1}
	var best Checkpoint
	for i, name := range ckptNames {
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			c.close()
			return nil, Checkpoint{}, err
		}
		c.slots[i] = f
		cp, seq, err := readSlot(f)
		if err != nil {
			continue // torn or never written
		}
		if c.last < 0 || seq > c.seq {
			c.seq, c.last, best = seq, i, cp
		}
	}
	return c, best, nil
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

// write stores cp durably in the slot not holding the newest checkpoint.
func (c *checkpointFile) write(cp Checkpoint) error {
	if len(cp.Extra) > ckptMaxExtra {
		return fmt.Errorf("segment: checkpoint extra of %d bytes is too large", len(cp.Extra))
	}
	slot := 0
	if c.last == 0 {
		slot = 1
	}
	seq := c.seq + 1
	need := ckptHeaderSize + len(cp.Extra) + 4
	if cap(c.buf) < need {
		c.buf = make([]byte, need)
	}
	b := c.buf[:need]
	copy(b, ckptMagic)
	binary.BigEndian.PutUint32(b[4:], ckptVersion)
	binary.BigEndian.PutUint64(b[8:], seq)
	binary.BigEndian.PutUint64(b[16:], cp.AppliedIndex)
	binary.BigEndian.PutUint64(b[24:], uint64(cp.NextOffset))
	binary.BigEndian.PutUint32(b[32:], uint32(len(cp.Extra)))
	copy(b[ckptHeaderSize:], cp.Extra)
	binary.BigEndian.PutUint32(b[need-4:], crc32.Checksum(b[:need-4], castagnoli))
	if _, err := c.slots[slot].WriteAt(b, 0); err != nil {
		return err
	}
	if err := datasync(c.slots[slot]); err != nil {
		return err
	}
	c.seq, c.last = seq, slot
	return nil
}

func (c *checkpointFile) close() {
	for i, f := range c.slots {
		if f != nil {
			f.Close()
			c.slots[i] = nil
		}
	}
}
