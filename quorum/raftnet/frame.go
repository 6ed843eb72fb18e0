package raftnet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"net"

	pb "github.com/lni/dragonboat/v4/raftpb"
)

// The wire format. Both ends are Sluice brokers, so it is ours; every integer is little endian.
//
// A frame is a 16-byte header and a payload:
//
//	magic u32 | kind u8 | flags u8 | 0 u16 | payload length u32 | CRC-32 u32
//
// The CRC covers the header's first 12 bytes and the payload. flagEntryData says the payload holds
// entry commands, which the receiver then reads into a buffer of the frame's own (the entries alias
// it); other frames (heartbeats, votes, acknowledgements, snapshot chunks) are read into a buffer
// the connection reuses.
//
// A batch frame's payload (kindBatch):
//
//	deployment id u64 | binary version u32 | messages u32 | entries (all messages) u32 |
//	source address length u32 | source address
//	per message: length u32 | raftpb Message without its entries | entries u32 |
//	  per entry: term u64 | index u64 | key u64 | client id u64 | series id u64 |
//	             responded to u64 | type u32 | command length u32 | command
//
// A snapshot chunk frame (kindChunk) carries one raftpb Chunk as raftpb marshals it (chunks are
// rare and big, and their data is copied to a file anyway). kindBye ends a snapshot connection
// (dragonboat waits for everything it sent to be taken before closing one); the receiver answers
// kindByeAck, with an empty payload, and closes.
const frameMagic uint32 = 0x31524c53 // "SLR1"

const (
	headerLen      = 16
	entryHeaderLen = 56

	kindBatch  = 1
	kindChunk  = 2
	kindBye    = 3
	kindByeAck = 4

	flagEntryData = 1

	// maxFrameLen bounds a payload. dragonboat batches messages up to 64 MiB (and sends a larger
	// single message alone: a Replicate message holds at most 64 MiB of entries).
	maxFrameLen = 256 << 20
)

// crcTable: IEEE CRC-32, as dragonboat's transport. On this VM Go's IEEE (PCLMULQDQ) costs under half
// of its Castagnoli (SSE 4.2) per byte: with CRC-32C the frames' CRC was 3.5% of the brokers' CPU at
// rf=3, 100 B records (results/2026-12-07-2core-vm-raftnet).
var crcTable = crc32.IEEETable

var (
	errFrame = errors.New("raftnet: bad frame")
	errShort = fmt.Errorf("%w: payload shorter than its contents", errFrame)
)

// header is a decoded frame header.
type header struct {
	kind   byte
	flags  byte
	length uint32
	crc    uint32
}

func putHeader(b []byte, kind, flags byte, length uint32) {
	binary.LittleEndian.PutUint32(b[0:], frameMagic)
	b[4], b[5], b[6], b[7] = kind, flags, 0, 0
	binary.LittleEndian.PutUint32(b[8:], length)
}

// parseHeader checks what can be checked before the payload is read: the magic, the kind and the
// length bound (the CRC needs the payload).
func parseHeader(b []byte) (header, error) {
	if m := binary.LittleEndian.Uint32(b); m != frameMagic {
		return header{}, fmt.Errorf("%w: magic %#x", errFrame, m)
	}
	h := header{kind: b[4], flags: b[5], length: binary.LittleEndian.Uint32(b[8:]), crc: binary.LittleEndian.Uint32(b[12:])}
	if h.kind < kindBatch || h.kind > kindByeAck || b[6] != 0 || b[7] != 0 || h.flags&^flagEntryData != 0 {
		return header{}, fmt.Errorf("%w: kind %d flags %#x", errFrame, h.kind, h.flags)
	}
	if h.length > maxFrameLen {
		return header{}, fmt.Errorf("%w: payload of %d bytes, more than %d", errFrame, h.length, maxFrameLen)
	}
	return h, nil
}

// checkCRC verifies the frame's CRC over its header and payload.
func checkCRC(hdr []byte, h header, payload []byte) error {
	c := crc32.Update(0, crcTable, hdr[:12])
	if c = crc32.Update(c, crcTable, payload); c != h.crc {
		return fmt.Errorf("%w: CRC %#x, header says %#x", errFrame, c, h.crc)
	}
	return nil
}

// encoder builds batch frames. The entries' commands are not copied: Encode returns the frame as
// buffers for one writev, the encoder's own bytes (headers, messages, small commands) between the
// commands. Not safe for concurrent use; the buffers are valid until the next Encode.
type encoder struct {
	scratch []byte
	pieces  []piece
	bufs    [][]byte
	// copyBelow: commands shorter than this are copied into scratch rather than given their own
	// buffer (an iovec costs about as much as copying a few hundred bytes). Over TLS, where
	// net.Buffers becomes one write, and one TLS record, per buffer, everything is copied.
	copyBelow int
}

// piece is a command sent from its own memory after the scratch bytes up to off.
type piece struct {
	off int
	cmd []byte
}

const defaultCopyBelow = 512

// Encode returns the frame of b. The buffers alias the entries' commands.
func (e *encoder) Encode(b *pb.MessageBatch) (net.Buffers, error) {
	s := e.scratch[:0]
	e.pieces = e.pieces[:0]
	entries := 0
	for i := range b.Requests {
		entries += len(b.Requests[i].Entries)
	}
	s = append(s, make([]byte, headerLen)...)
	s = binary.LittleEndian.AppendUint64(s, b.DeploymentId)
	s = binary.LittleEndian.AppendUint32(s, b.BinVer)
	s = binary.LittleEndian.AppendUint32(s, uint32(len(b.Requests)))
	s = binary.LittleEndian.AppendUint32(s, uint32(entries))
	s = binary.LittleEndian.AppendUint32(s, uint32(len(b.SourceAddress)))
	s = append(s, b.SourceAddress...)
	total := 0 // command bytes sent from their own memory
	data := false
	for i := range b.Requests {
		m := b.Requests[i] // a copy: the message's fields alone go through raftpb
		ents := m.Entries
		m.Entries = nil
		n := m.Size()
		s = binary.LittleEndian.AppendUint32(s, uint32(n))
		s = grow(s, n)
		if _, err := m.MarshalTo(s[len(s)-n:]); err != nil {
			return nil, fmt.Errorf("raftnet: marshal message: %w", err)
		}
		s = binary.LittleEndian.AppendUint32(s, uint32(len(ents)))
		for j := range ents {
			en := &ents[j]
			s = binary.LittleEndian.AppendUint64(s, en.Term)
			s = binary.LittleEndian.AppendUint64(s, en.Index)
			s = binary.LittleEndian.AppendUint64(s, en.Key)
			s = binary.LittleEndian.AppendUint64(s, en.ClientID)
			s = binary.LittleEndian.AppendUint64(s, en.SeriesID)
			s = binary.LittleEndian.AppendUint64(s, en.RespondedTo)
			s = binary.LittleEndian.AppendUint32(s, uint32(en.Type))
			s = binary.LittleEndian.AppendUint32(s, uint32(len(en.Cmd)))
			if len(en.Cmd) == 0 {
				continue
			}
			data = true
			if len(en.Cmd) < e.copyBelow {
				s = append(s, en.Cmd...)
				continue
			}
			e.pieces = append(e.pieces, piece{off: len(s), cmd: en.Cmd})
			total += len(en.Cmd)
		}
	}
	e.scratch = s
	length := len(s) - headerLen + total
	if length > maxFrameLen {
		return nil, fmt.Errorf("raftnet: message batch of %d bytes, more than %d", length, maxFrameLen)
	}
	var flags byte
	if data {
		flags = flagEntryData
	}
	putHeader(s, kindBatch, flags, uint32(length))

	bufs := e.bufs[:0]
	prev := 0
	for _, p := range e.pieces {
		bufs = append(bufs, s[prev:p.off], p.cmd)
		prev = p.off
	}
	if prev < len(s) {
		bufs = append(bufs, s[prev:])
	}
	c := crc32.Update(0, crcTable, s[:12])
	c = crc32.Update(c, crcTable, bufs[0][headerLen:])
	for _, b := range bufs[1:] {
		c = crc32.Update(c, crcTable, b)
	}
	binary.LittleEndian.PutUint32(s[12:], c)
	e.bufs = bufs
	return net.Buffers(bufs), nil
}

// clear drops the references to the last batch's commands (they belong to dragonboat's log), and
// the scratch buffer when a big batch (over TLS: its commands too) left it large.
func (e *encoder) clear() {
	clear(e.pieces)
	clear(e.bufs[:cap(e.bufs)])
	if cap(e.scratch) > scratchKeep {
		e.scratch = nil
	}
}

const scratchKeep = 4 << 20

// grow extends s by n bytes.
func grow(s []byte, n int) []byte {
	if cap(s)-len(s) < n {
		t := make([]byte, len(s), 2*cap(s)+n)
		copy(t, s)
		s = t
	}
	return s[:len(s)+n]
}

// encodeChunk appends the frame of one snapshot chunk to dst.
func encodeChunk(dst []byte, c *pb.Chunk) ([]byte, error) {
	n := c.Size()
	if n > maxFrameLen {
		return nil, fmt.Errorf("raftnet: snapshot chunk of %d bytes, more than %d", n, maxFrameLen)
	}
	s := grow(dst[:0], headerLen+n)
	if _, err := c.MarshalTo(s[headerLen:]); err != nil {
		return nil, fmt.Errorf("raftnet: marshal chunk: %w", err)
	}
	putHeader(s, kindChunk, 0, uint32(n))
	c32 := crc32.Update(0, crcTable, s[:12])
	binary.LittleEndian.PutUint32(s[12:], crc32.Update(c32, crcTable, s[headerLen:]))
	return s, nil
}

// controlFrame is the frame of a kind with no payload (kindBye, kindByeAck).
func controlFrame(kind byte) []byte {
	b := make([]byte, headerLen)
	putHeader(b, kind, 0, 0)
	binary.LittleEndian.PutUint32(b[12:], crc32.Update(0, crcTable, b[:12]))
	return b
}

// decoder decodes batch frames. It keeps the last source address so that a connection's frames
// share one string.
type decoder struct {
	source string
}

// reader walks a payload; the first read past its end sets err and returns zeros.
type reader struct {
	p   []byte
	off int
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil || n < 0 || len(r.p)-r.off < n {
		r.err = errShort
		return nil
	}
	b := r.p[r.off : r.off+n : r.off+n]
	r.off += n
	return b
}

func (r *reader) u64() uint64 {
	if b := r.take(8); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

func (r *reader) u32() uint32 {
	if b := r.take(4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

// Decode decodes a batch frame's payload. The entries' commands alias p: p must not be reused
// while dragonboat holds them (until they are applied and compacted away). Each command's capacity
// ends where it does, so an append to one cannot overwrite the next.
func (d *decoder) Decode(p []byte) (pb.MessageBatch, error) {
	r := reader{p: p}
	var b pb.MessageBatch
	b.DeploymentId = r.u64()
	b.BinVer = r.u32()
	nmsg, nent := r.u32(), r.u32()
	src := r.take(int(r.u32()))
	if r.err != nil {
		return pb.MessageBatch{}, r.err
	}
	if string(src) != d.source { // no allocation when equal
		d.source = string(src)
	}
	b.SourceAddress = d.source
	// Bound the allocations by the payload before making them: a message takes at least 8 bytes,
	// an entry entryHeaderLen.
	if uint64(nmsg)*8 > uint64(len(p)) || uint64(nent)*entryHeaderLen > uint64(len(p)) {
		return pb.MessageBatch{}, fmt.Errorf("%w: %d messages and %d entries in %d bytes", errFrame, nmsg, nent, len(p))
	}
	b.Requests = make([]pb.Message, nmsg)
	var ents []pb.Entry
	if nent > 0 {
		ents = make([]pb.Entry, nent)
	}
	used := 0
	for i := range b.Requests {
		m := &b.Requests[i]
		body := r.take(int(r.u32()))
		if r.err != nil {
			return pb.MessageBatch{}, r.err
		}
		if err := m.Unmarshal(body); err != nil {
			return pb.MessageBatch{}, fmt.Errorf("%w: message %d: %v", errFrame, i, err)
		}
		if len(m.Entries) != 0 {
			return pb.MessageBatch{}, fmt.Errorf("%w: message %d carries raftpb entries", errFrame, i)
		}
		n := int(r.u32())
		if n > len(ents)-used {
			return pb.MessageBatch{}, fmt.Errorf("%w: message %d has %d entries, the batch %d in all", errFrame, i, n, nent)
		}
		if n == 0 {
			continue
		}
		m.Entries = ents[used : used+n : used+n]
		used += n
		for j := range m.Entries {
			e := &m.Entries[j]
			h := r.take(entryHeaderLen)
			if h == nil {
				return pb.MessageBatch{}, r.err
			}
			e.Term = binary.LittleEndian.Uint64(h[0:])
			e.Index = binary.LittleEndian.Uint64(h[8:])
			e.Key = binary.LittleEndian.Uint64(h[16:])
			e.ClientID = binary.LittleEndian.Uint64(h[24:])
			e.SeriesID = binary.LittleEndian.Uint64(h[32:])
			e.RespondedTo = binary.LittleEndian.Uint64(h[40:])
			e.Type = pb.EntryType(binary.LittleEndian.Uint32(h[48:]))
			if l := binary.LittleEndian.Uint32(h[52:]); l > 0 {
				e.Cmd = r.take(int(l))
				if r.err != nil {
					return pb.MessageBatch{}, r.err
				}
			}
		}
	}
	if r.err != nil {
		return pb.MessageBatch{}, r.err
	}
	if used != len(ents) {
		return pb.MessageBatch{}, fmt.Errorf("%w: %d entries, the header says %d", errFrame, used, nent)
	}
	if r.off != len(p) {
		return pb.MessageBatch{}, fmt.Errorf("%w: %d bytes after the last message", errFrame, len(p)-r.off)
	}
	return b, nil
}
