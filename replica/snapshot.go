package replica

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	sm "github.com/lni/dragonboat/v4/statemachine"

	"github.com/sluicebroker/sluice/internal/diskio"
	"github.com/sluicebroker/sluice/segment"
)

// A partition snapshot is what a follower needs to rebuild the partition:
//
//	header: magic | applied index u64 | start offset i64 | next offset i64 | producer state len u32 | producer state
//	chunks: segment base offset i64 | length u32 | that many bytes of whole batches
//	end:    base offset -1
//
// Chunks carry the segment files' bytes in order, each file from its start,
// so the receiver writes files with the same names and segment.Open rebuilds
// the indexes. Local snapshots of on-disk state machines never call
// SaveSnapshot (they are metadata only); a follower that fell behind the
// compacted Raft log receives this stream.
const (
	snapshotMagic    = "SLCSNAP1"
	snapshotHdrLen   = len(snapshotMagic) + 8 + 8 + 8 + 4
	snapshotChunkLen = 1 << 20
)

// snapshotState is the point-in-time identity PrepareSnapshot hands to SaveSnapshot.
type snapshotState struct {
	applied     uint64
	startOffset int64
	nextOffset  int64
	producers   []byte
}

func (s *stateMachine) PrepareSnapshot() (any, error) {
	return &snapshotState{
		applied:     s.applied,
		startOffset: s.log.StartOffset(),
		nextOffset:  s.next,
		producers:   s.producers.encode(nil),
	}, nil
}

// SaveSnapshot streams the log as of PrepareSnapshot while Update may append
// past it: batches at or after the prepared next offset are left out.
func (s *stateMachine) SaveSnapshot(state any, w io.Writer, stop <-chan struct{}) error {
	st := state.(*snapshotState)
	hdr := make([]byte, 0, snapshotHdrLen+len(st.producers)+12)
	hdr = append(hdr, snapshotMagic...)
	hdr = binary.BigEndian.AppendUint64(hdr, st.applied)
	hdr = binary.BigEndian.AppendUint64(hdr, uint64(st.startOffset))
	hdr = binary.BigEndian.AppendUint64(hdr, uint64(st.nextOffset))
	hdr = binary.BigEndian.AppendUint32(hdr, uint32(len(st.producers)))
	hdr = append(hdr, st.producers...)
	// An empty first chunk creates the first segment even when it holds no
	// batch, so the receiver's log starts at the same offset.
	hdr = binary.BigEndian.AppendUint64(hdr, uint64(st.startOffset))
	hdr = binary.BigEndian.AppendUint32(hdr, 0)
	if _, err := w.Write(hdr); err != nil {
		return err
	}
	buf := make([]byte, 0, snapshotChunkLen+64<<10)
	for off := st.startOffset; off < st.nextOffset; {
		select {
		case <-stop:
			return sm.ErrSnapshotStopped
		default:
		}
		r, err := s.log.Read(off, snapshotChunkLen)
		if err != nil {
			// Retention may have removed the prepared start; dragonboat
			// retries a failed snapshot later.
			return fmt.Errorf("replica: snapshot of %s at offset %d: %w", s.p.dir, off, err)
		}
		off, err = writeChunks(w, r, off, st.nextOffset, buf)
		r.Release()
		if err != nil {
			return err
		}
	}
	var end [8]byte
	binary.BigEndian.PutUint64(end[:], ^uint64(0))
	_, err := w.Write(end[:])
	return err
}

// writeChunks writes the ranges of r as chunks, cut before the batch at limit,
// and returns the offset after the last batch written.
func writeChunks(w io.Writer, r *segment.ReadResult, off, limit int64, buf []byte) (int64, error) {
	for _, rg := range r.Ranges {
		base, ok := segmentBase(rg.File.Name())
		if !ok {
			return off, fmt.Errorf("replica: snapshot: unexpected segment file %s", rg.File.Name())
		}
		buf = buf[:12+rg.Len]
		if _, err := rg.File.ReadAt(buf[12:], rg.Pos); err != nil {
			return off, err
		}
		// Keep whole batches below limit.
		n := 12
		for n < len(buf) {
			h, err := segment.ParseHeader(buf[n:])
			if err != nil || n+h.Size() > len(buf) {
				return off, fmt.Errorf("replica: snapshot: bad batch in %s: %v", rg.File.Name(), err)
			}
			if h.BaseOffset >= limit {
				break
			}
			n += h.Size()
			off = h.NextOffset()
		}
		if n == 12 {
			return off, nil
		}
		binary.BigEndian.PutUint64(buf[0:], uint64(base))
		binary.BigEndian.PutUint32(buf[8:], uint32(n-12))
		if _, err := w.Write(buf[:n]); err != nil {
			return off, err
		}
		if off >= limit {
			return off, nil
		}
	}
	return off, nil
}

// segmentBase parses Kafka's segment file name, <20-digit base offset>.log.
func segmentBase(path string) (int64, bool) {
	stem, ok := strings.CutSuffix(filepath.Base(path), ".log")
	if !ok || len(stem) != 20 {
		return 0, false
	}
	base, err := strconv.ParseInt(stem, 10, 64)
	return base, err == nil
}

// RecoverFromSnapshot replaces this replica's log and producer state with the
// snapshot's: the files are written to a fresh directory that the Raft log
// store then swaps in (installRaftLog).
func (s *stateMachine) RecoverFromSnapshot(r io.Reader, stop <-chan struct{}) error {
	var hdr [snapshotHdrLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return fmt.Errorf("replica: read snapshot: %w", err)
	}
	if string(hdr[:len(snapshotMagic)]) != snapshotMagic {
		return errors.New("replica: not a partition snapshot")
	}
	b := hdr[len(snapshotMagic):]
	applied := binary.BigEndian.Uint64(b)
	nextOffset := int64(binary.BigEndian.Uint64(b[16:]))
	prod := make([]byte, binary.BigEndian.Uint32(b[24:]))
	if _, err := io.ReadFull(r, prod); err != nil {
		return fmt.Errorf("replica: read snapshot: %w", err)
	}
	producers, err := decodeProducerState(prod)
	if err != nil {
		return err
	}

	dir := s.p.dir
	tmp := dir + ".snapshot"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := claimDir(tmp, s.p.shardID); err != nil {
		return err
	}
	if err := receiveSegments(r, tmp, stop); err != nil {
		os.RemoveAll(tmp)
		return err
	}
	// The sender's cleaner may have compacted these segments (offset gaps): say so before they open.
	if err := segment.AllowGapsBelow(tmp, nextOffset); err != nil {
		os.RemoveAll(tmp)
		return err
	}

	return s.installRaftLog(tmp, applied, nextOffset, producers)
}

// installRaftLog is RecoverFromSnapshot's end: the Raft log store swaps in the
// received segments and writes after them the batches Raft saved since the snapshot.
func (s *stateMachine) installRaftLog(tmp string, applied uint64, nextOffset int64, producers *producerState) error {
	if s.log != nil {
		s.p.detach(s.log)
		s.log = nil
		close(s.closed)
	}
	log, base, err := s.rl.ReplaceLog(tmp, applied)
	if err != nil {
		return fmt.Errorf("replica: install snapshot into %s: %w", s.p.dir, err)
	}
	if base != nextOffset {
		return fmt.Errorf("replica: snapshot of %s ends at offset %d, expected %d", s.p.dir, base, nextOffset)
	}
	s.log, s.producers, s.applied, s.next = log, producers, applied, nextOffset
	if err := s.Sync(); err != nil {
		return err
	}
	s.closed = s.p.attach(log, producers, s.next)
	s.p.advance(nextOffset)
	s.p.snapshotsInstalled.Add(1)
	s.p.logger.Info("installed snapshot", "dir", s.p.dir, "applied_index", applied,
		"start_offset", log.StartOffset(), "next_offset", nextOffset)
	return nil
}

// receiveSegments writes the snapshot's chunks into segment files in dir.
func receiveSegments(r io.Reader, dir string, stop <-chan struct{}) error {
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	var cur *os.File
	curBase := int64(-1)
	var pos int64
	var hdr [12]byte
	buf := make([]byte, 64<<10)
	for {
		select {
		case <-stop:
			return sm.ErrSnapshotStopped
		default:
		}
		if _, err := io.ReadFull(r, hdr[:8]); err != nil {
			return fmt.Errorf("replica: read snapshot: %w", err)
		}
		base := int64(binary.BigEndian.Uint64(hdr[:8]))
		if base == -1 {
			break
		}
		if _, err := io.ReadFull(r, hdr[8:12]); err != nil {
			return fmt.Errorf("replica: read snapshot: %w", err)
		}
		n := int64(binary.BigEndian.Uint32(hdr[8:12]))
		if base < 0 || base < curBase {
			return fmt.Errorf("replica: snapshot chunk for segment %d after %d", base, curBase)
		}
		if base != curBase {
			f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("%020d.log", base)), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
			if err != nil {
				return err
			}
			files = append(files, f)
			cur, curBase, pos = f, base, 0
		}
		for n > 0 {
			k := min(n, int64(len(buf)))
			if _, err := io.ReadFull(r, buf[:k]); err != nil {
				return fmt.Errorf("replica: read snapshot: %w", err)
			}
			if _, err := cur.WriteAt(buf[:k], pos); err != nil {
				return err
			}
			pos += k
			n -= k
		}
	}
	for _, f := range files {
		if err := f.Sync(); err != nil {
			return err
		}
	}
	return syncDir(dir)
}

var syncDir = diskio.SyncDir
