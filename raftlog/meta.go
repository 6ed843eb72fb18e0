package raftlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	pb "github.com/lni/dragonboat/v4/raftpb"

	"github.com/sluicebroker/sluice/internal/diskio"
	"github.com/sluicebroker/sluice/internal/fdcache"
)

// A shard's metadata log: its Raft state and, per entry, the Raft fields plus where the command is
// (in the partition's segment, or inline here). Records are appended and fsynced with the segment
// data they describe; the newest file is a complete picture (rotation writes the live state into a
// new file before the old ones go), so recovery reads that one file.
//
// File: <dir>/<seq, 16 digits>.meta, preallocated in chunks (zeros end the records).
// Record: [u32 body length][u32 CRC-32C of body][body]; body[0] is the record type.
const (
	recEntry     byte = 1 // index, term, type, key, client, series, respondedTo, where, ...
	recState     byte = 2 // term, vote, commit
	recSnapshot  byte = 3 // received flag, marshaled pb.Snapshot
	recCompacted byte = 4 // marker index, marker term, segment offset after the marker
	recInstalled byte = 5 // snapshot index installed into the segment, segment next offset

	whereInline  byte = 0
	whereSegment byte = 1

	recHeaderLen = 8
	metaSuffix   = ".meta"

	firstMetaChunk = 64 << 10
	maxMetaChunk   = 1 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errStop ends a record scan early.
var errStop = errors.New("stop")

// metaFiles holds the metadata files' descriptors: an idle shard's file is closed once others
// need the room, and reopened at its next write (10,000 shards' files did not fit under the open
// files limit beside their segments).
var metaFiles = fdcache.Default

// metaFile is the newest metadata file of a shard.
type metaFile struct {
	dir   string
	seq   uint64
	file  *fdcache.File
	f     *os.File // file's descriptor, while pinned by flush, sync or rotate
	end   int64    // where the next record goes
	alloc int64    // preallocated bytes (zeros past end)
	buf   []byte
	dirty bool      // written since the last sync
	since time.Time // when it became dirty
}

// unsyncedFor is how long the oldest record not yet fsynced has waited; 0 when there is none.
func (m *metaFile) unsyncedFor() time.Duration {
	if !m.dirty {
		return 0
	}
	return time.Since(m.since)
}

func metaName(dir string, seq uint64) string {
	return filepath.Join(dir, fmt.Sprintf("%016d%s", seq, metaSuffix))
}

// listMeta returns the metadata files' sequence numbers in dir, oldest first.
func listMeta(dir string) ([]uint64, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	var seqs []uint64
	for _, de := range des {
		stem, ok := strings.CutSuffix(de.Name(), metaSuffix)
		if !ok {
			if strings.HasSuffix(de.Name(), metaSuffix+".tmp") {
				os.Remove(filepath.Join(dir, de.Name())) // a rotation cut short
			}
			continue
		}
		if n, err := strconv.ParseUint(stem, 10, 64); err == nil {
			seqs = append(seqs, n)
		}
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	return seqs, nil
}

// openMeta opens the newest metadata file in dir (creating dir and a first file if there is none),
// hands every valid record to fn in order, and positions the file after the last valid one. Older
// files, left by a rotation that stopped after its rename, are removed.
func openMeta(dir string, fn func(body []byte) error) (*metaFile, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	seqs, err := listMeta(dir)
	if err != nil {
		return nil, err
	}
	m := &metaFile{dir: dir, seq: 1}
	if len(seqs) == 0 {
		f, err := os.OpenFile(metaName(dir, 1), os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			return nil, err
		}
		if err := diskio.SyncDir(dir); err != nil {
			f.Close()
			return nil, err
		}
		m.file = metaFiles().Adopt(f, metaName(dir, 1), os.O_RDWR)
		return m, nil
	}
	m.seq = seqs[len(seqs)-1]
	for _, old := range seqs[:len(seqs)-1] {
		os.Remove(metaName(dir, old))
	}
	data, err := os.ReadFile(metaName(dir, m.seq))
	if err != nil {
		return nil, err
	}
	end := scanRecords(data, fn)
	if end < 0 {
		return nil, fmt.Errorf("raftlog: %s: %w", metaName(dir, m.seq), errStop)
	}
	f, err := os.OpenFile(metaName(dir, m.seq), os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	m.end, m.alloc = end, int64(len(data))
	for _, c := range data[end:] {
		if c != 0 {
			// A torn record: cut it, so that a later, shorter record never runs into its remains.
			if err := f.Truncate(end); err != nil {
				f.Close()
				return nil, err
			}
			m.alloc = end
			break
		}
	}
	m.file = metaFiles().Adopt(f, metaName(dir, m.seq), os.O_RDWR)
	return m, nil
}

// scanRecords calls fn for each valid record of data and returns the end of the last one; the
// first record that is cut short, zero or fails its CRC ends the scan (a torn tail). It returns -1
// if fn fails.
func scanRecords(data []byte, fn func(body []byte) error) int64 {
	pos := 0
	for pos+recHeaderLen <= len(data) {
		n := int(binary.BigEndian.Uint32(data[pos:]))
		sum := binary.BigEndian.Uint32(data[pos+4:])
		if n == 0 || pos+recHeaderLen+n > len(data) {
			break
		}
		body := data[pos+recHeaderLen : pos+recHeaderLen+n]
		if crc32.Checksum(body, castagnoli) != sum {
			break
		}
		if err := fn(body); err != nil {
			return -1
		}
		pos += recHeaderLen + n
	}
	return int64(pos)
}

// beginRecord starts a record in the buffer and returns where its header is.
func (m *metaFile) beginRecord(typ byte) int {
	at := len(m.buf)
	m.buf = append(m.buf, 0, 0, 0, 0, 0, 0, 0, 0, typ)
	return at
}

// endRecord fills in the length and CRC of the record begun at at.
func (m *metaFile) endRecord(at int) {
	body := m.buf[at+recHeaderLen:]
	binary.BigEndian.PutUint32(m.buf[at:], uint32(len(body)))
	binary.BigEndian.PutUint32(m.buf[at+4:], crc32.Checksum(body, castagnoli))
}

func (m *metaFile) addState(st pb.State) {
	at := m.beginRecord(recState)
	m.buf = binary.BigEndian.AppendUint64(m.buf, st.Term)
	m.buf = binary.BigEndian.AppendUint64(m.buf, st.Vote)
	m.buf = binary.BigEndian.AppendUint64(m.buf, st.Commit)
	m.endRecord(at)
}

func (m *metaFile) addSnapshot(ss pb.Snapshot, received bool) error {
	data, err := ss.Marshal()
	if err != nil {
		return err
	}
	at := m.beginRecord(recSnapshot)
	flag := byte(0)
	if received {
		flag = 1
	}
	m.buf = append(m.buf, flag)
	m.buf = append(m.buf, data...)
	m.endRecord(at)
	return nil
}

func (m *metaFile) addCompacted(index, term uint64, segNext int64) {
	at := m.beginRecord(recCompacted)
	m.buf = binary.BigEndian.AppendUint64(m.buf, index)
	m.buf = binary.BigEndian.AppendUint64(m.buf, term)
	m.buf = binary.BigEndian.AppendUint64(m.buf, uint64(segNext))
	m.endRecord(at)
}

func (m *metaFile) addInstalled(index uint64, segNext int64) {
	at := m.beginRecord(recInstalled)
	m.buf = binary.BigEndian.AppendUint64(m.buf, index)
	m.buf = binary.BigEndian.AppendUint64(m.buf, uint64(segNext))
	m.endRecord(at)
}

func (m *metaFile) addEntry(index uint64, e *entryInfo) {
	at := m.beginRecord(recEntry)
	b := m.buf
	b = binary.BigEndian.AppendUint64(b, index)
	b = binary.BigEndian.AppendUint64(b, e.term)
	b = append(b, byte(e.typ))
	b = binary.BigEndian.AppendUint64(b, e.key)
	b = binary.BigEndian.AppendUint64(b, e.clientID)
	b = binary.BigEndian.AppendUint64(b, e.seriesID)
	b = binary.BigEndian.AppendUint64(b, e.respondedTo)
	if e.inSegment {
		b = append(b, whereSegment)
		b = binary.BigEndian.AppendUint64(b, uint64(e.offset))
		b = binary.BigEndian.AppendUint32(b, uint32(e.size))
		b = binary.BigEndian.AppendUint32(b, uint32(e.delta))
		b = append(b, byte(e.headLen))
		b = append(b, e.head[:e.headLen]...)
	} else {
		b = append(b, whereInline)
		b = append(b, e.cmd...)
	}
	m.buf = b
	m.endRecord(at)
}

const entryFixedLen = 1 + 8 + 8 + 1 + 8*4 + 1

// decodeEntry reads an entry record's body (after the type byte).
func decodeEntry(b []byte) (index uint64, e entryInfo, err error) {
	if len(b) < entryFixedLen-1 {
		return 0, e, errors.New("raftlog: short entry record")
	}
	be := binary.BigEndian
	index = be.Uint64(b)
	e.term = be.Uint64(b[8:])
	e.typ = pb.EntryType(b[16])
	e.key = be.Uint64(b[17:])
	e.clientID = be.Uint64(b[25:])
	e.seriesID = be.Uint64(b[33:])
	e.respondedTo = be.Uint64(b[41:])
	where, rest := b[49], b[50:]
	switch where {
	case whereInline:
		e.cmd = append([]byte(nil), rest...)
	case whereSegment:
		if len(rest) < 17 {
			return 0, e, errors.New("raftlog: short segment entry record")
		}
		e.inSegment = true
		e.offset = int64(be.Uint64(rest))
		e.size = int32(be.Uint32(rest[8:]))
		e.delta = int32(be.Uint32(rest[12:]))
		e.headLen = rest[16]
		if int(e.headLen) > maxHeaderLen || len(rest) < 17+int(e.headLen) {
			return 0, e, errors.New("raftlog: bad segment entry record")
		}
		copy(e.head[:], rest[17:17+int(e.headLen)])
	default:
		return 0, e, fmt.Errorf("raftlog: entry record with location %d", where)
	}
	return index, e, nil
}

// pin acquires the file's descriptor into m.f, if not held already.
func (m *metaFile) pin() error {
	if m.f != nil {
		return nil
	}
	f, err := m.file.Acquire()
	if err != nil {
		return err
	}
	m.f = f
	return nil
}

// unpin gives the descriptor back to the cache.
func (m *metaFile) unpin() {
	if m.f != nil {
		m.f = nil
		m.file.Release()
	}
}

// flush writes the buffered records (one write) after preallocating room for them.
//
// The descriptor goes back to the cache afterwards, though the records may wait for their fsync
// (up to metaSyncMaxAge, or until the shard's next save): an idle shard must not hold one. A
// write-back error meanwhile is still reported by the fsync through a reopened descriptor: Linux
// (4.16 on, errseq) reports an error no descriptor has seen to the next fsync on the file, whoever
// opened it when; nothing else fsyncs these files.
func (m *metaFile) flush() error {
	if len(m.buf) == 0 {
		return nil
	}
	if err := m.pin(); err != nil {
		return err
	}
	defer m.unpin()
	need := m.end + int64(len(m.buf))
	if need > m.alloc {
		chunk := min(max(m.alloc, firstMetaChunk), maxMetaChunk)
		target := max(need, m.alloc+chunk)
		if err := diskio.Preallocate(m.f, target); err != nil {
			return err
		}
		m.alloc = target
	}
	if _, err := m.f.WriteAt(m.buf, m.end); err != nil {
		return err
	}
	m.end = need
	m.buf = m.buf[:0]
	if !m.dirty {
		m.dirty, m.since = true, time.Now()
	}
	return nil
}

func (m *metaFile) sync() error {
	if !m.dirty {
		return nil
	}
	if err := m.pin(); err != nil {
		return err
	}
	defer m.unpin()
	if err := diskio.Datasync(m.f); err != nil {
		return err
	}
	m.dirty = false
	return nil
}

// rotate writes records (a complete picture of the shard) into the next file, makes it durable and
// the current one, and removes the old file.
func (m *metaFile) rotate(records []byte) error {
	next := m.seq + 1
	tmp := metaName(m.dir, next) + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(records, 0); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := diskio.Datasync(f); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, metaName(m.dir, next)); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := diskio.SyncDir(m.dir); err != nil {
		f.Close()
		return err
	}
	old := m.seq
	m.unpin()
	m.file.Close()
	m.file = metaFiles().Adopt(f, metaName(m.dir, next), os.O_RDWR)
	m.seq, m.end, m.alloc, m.dirty = next, int64(len(records)), int64(len(records)), false
	os.Remove(metaName(m.dir, old))
	return nil
}

func (m *metaFile) close() error {
	if m.file == nil {
		return nil
	}
	m.unpin()
	err := m.file.Close()
	m.file = nil
	return err
}

// size is the bytes of records in the current file.
func (m *metaFile) size() int64 { return m.end }
