package raftnet

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unsafe"

	pb "github.com/lni/dragonboat/v4/raftpb"
)

// fullMessage is a message with every field set.
func fullMessage(typ pb.MessageType, ents []pb.Entry) pb.Message {
	return pb.Message{
		Type: typ, To: 2, From: 3, ShardID: 77, Term: 9, LogTerm: 8, LogIndex: 1000, Commit: 999,
		Reject: true, Hint: 12345, HintHigh: 1 << 40, Entries: ents,
	}
}

func entries(sizes ...int) []pb.Entry {
	var es []pb.Entry
	for i, n := range sizes {
		var cmd []byte
		if n > 0 {
			cmd = bytes.Repeat([]byte{byte('a' + i)}, n)
		}
		es = append(es, pb.Entry{
			Term: 9, Index: uint64(1001 + i), Type: pb.EntryType(i % 4), Key: uint64(i) * 7,
			ClientID: 1<<63 + uint64(i), SeriesID: 3, RespondedTo: 2, Cmd: cmd,
		})
	}
	return es
}

func snapshotMessage() pb.Message {
	m := fullMessage(pb.InstallSnapshot, nil)
	m.Snapshot = pb.Snapshot{
		Filepath: "/data/raft/snapshot-1", FileSize: 4096, Index: 990, Term: 8,
		Membership: pb.Membership{
			ConfigChangeId: 5,
			Addresses:      map[uint64]string{1: "127.0.0.1:9093", 2: "127.0.0.1:9094"},
			NonVotings:     map[uint64]string{4: "127.0.0.1:9096"},
			Removed:        map[uint64]bool{3: true},
		},
		Files:    []*pb.SnapshotFile{{Filepath: "/data/seg/0.log", FileSize: 100, FileId: 1, Metadata: []byte("meta")}},
		Checksum: []byte{1, 2, 3, 4}, Dummy: true, ShardID: 77, Type: pb.OnDiskStateMachine, Imported: true,
		OnDiskIndex: 980, Witness: true,
	}
	return m
}

// roundTrip encodes b, checks the frame as the receiver does, and decodes it.
func roundTrip(t *testing.T, e *encoder, b pb.MessageBatch) (pb.MessageBatch, []byte) {
	t.Helper()
	bufs, err := e.Encode(&b)
	if err != nil {
		t.Fatal(err)
	}
	frame := bytes.Join(bufs, nil)
	h, err := parseHeader(frame)
	if err != nil {
		t.Fatal(err)
	}
	p := frame[headerLen:]
	if int(h.length) != len(p) {
		t.Fatalf("header length %d, payload %d", h.length, len(p))
	}
	if err := checkCRC(frame, h, p); err != nil {
		t.Fatal(err)
	}
	if (h.flags&flagEntryData != 0) != hasEntryData(&b) {
		t.Fatalf("entry data flag %v, batch has data %v", h.flags&flagEntryData != 0, hasEntryData(&b))
	}
	var d decoder
	got, err := d.Decode(p)
	if err != nil {
		t.Fatal(err)
	}
	return got, p
}

// sameBatch compares two batches, an empty command or entry list the same as none (raftpb's own
// encoding does not tell them apart either).
func sameBatch(t *testing.T, want, got pb.MessageBatch) {
	t.Helper()
	norm := func(b pb.MessageBatch) pb.MessageBatch {
		b.Requests = slices.Clone(b.Requests)
		if len(b.Requests) == 0 {
			b.Requests = nil
		}
		for i := range b.Requests {
			m := &b.Requests[i]
			m.Entries = slices.Clone(m.Entries)
			if len(m.Entries) == 0 {
				m.Entries = nil
			}
			for j := range m.Entries {
				if len(m.Entries[j].Cmd) == 0 {
					m.Entries[j].Cmd = nil
				}
			}
		}
		return b
	}
	if w, g := norm(want), norm(got); !reflect.DeepEqual(w, g) {
		t.Fatalf("batch changed in transit:\nwant %+v\ngot  %+v", w, g)
	}
}

func TestFrameRoundTrip(t *testing.T) {
	cases := map[string]pb.MessageBatch{
		"empty": {DeploymentId: 1, BinVer: 210, SourceAddress: "127.0.0.1:9093"},
		"heartbeat": {DeploymentId: 1, BinVer: 210, SourceAddress: "127.0.0.1:9093",
			Requests: []pb.Message{fullMessage(pb.Heartbeat, nil), fullMessage(pb.HeartbeatResp, nil)}},
		"snapshot": {DeploymentId: 1, BinVer: 210, SourceAddress: "a:1", Requests: []pb.Message{snapshotMessage()}},
		"replicate": {DeploymentId: 42, BinVer: 210, SourceAddress: "10.0.0.1:9093", Requests: []pb.Message{
			fullMessage(pb.Replicate, entries(0, 10, 4096, 0, 511, 512, 100000)),
			fullMessage(pb.ReplicateResp, nil),
			fullMessage(pb.Replicate, entries(1)),
			fullMessage(pb.Replicate, entries(0, 0)),
		}},
		"empty-source": {Requests: []pb.Message{{Type: pb.Replicate, Entries: []pb.Entry{{Index: 1}}}}},
	}
	for name, b := range cases {
		for _, copyBelow := range []int{defaultCopyBelow, 0, 1 << 62} {
			e := encoder{copyBelow: copyBelow}
			got, _ := roundTrip(t, &e, b)
			sameBatch(t, b, got)
			// Twice through one encoder: its reused buffers must not leak the first batch.
			got, _ = roundTrip(t, &e, b)
			sameBatch(t, b, got)
			e.clear()
		}
		_ = name
	}
}

// TestFrameEntriesAliasFrame proves the receive side copies no command: each decoded Cmd lies
// inside the frame's buffer, with its capacity ending where it does.
func TestFrameEntriesAliasFrame(t *testing.T) {
	b := pb.MessageBatch{SourceAddress: "x:1", Requests: []pb.Message{
		fullMessage(pb.Replicate, entries(100, 1024, 0, 5000)),
		fullMessage(pb.Replicate, entries(3)),
	}}
	e := encoder{copyBelow: defaultCopyBelow}
	got, p := roundTrip(t, &e, b)
	lo := uintptr(unsafe.Pointer(unsafe.SliceData(p)))
	hi := lo + uintptr(len(p))
	n := 0
	for _, m := range got.Requests {
		for _, en := range m.Entries {
			if len(en.Cmd) == 0 {
				continue
			}
			a := uintptr(unsafe.Pointer(unsafe.SliceData(en.Cmd)))
			if a < lo || a+uintptr(len(en.Cmd)) > hi {
				t.Fatalf("entry %d: command at %#x not inside the frame [%#x, %#x)", en.Index, a, lo, hi)
			}
			if cap(en.Cmd) != len(en.Cmd) {
				t.Fatalf("entry %d: capacity %d past its length %d: an append would overwrite the next", en.Index, cap(en.Cmd), len(en.Cmd))
			}
			n++
		}
	}
	if n != 4 {
		t.Fatalf("%d commands checked, want 4", n)
	}
	// An append to one command leaves the next intact.
	first := got.Requests[0].Entries[0].Cmd
	_ = append(first, 'Z')
	if got.Requests[0].Entries[1].Cmd[0] != 'b' {
		t.Fatal("append to a command overwrote the next")
	}
}

// TestFrameSendsCommandsFromTheirMemory proves the send side copies no large command: the frame's
// buffers include the entries' own slices.
func TestFrameSendsCommandsFromTheirMemory(t *testing.T) {
	es := entries(4096, 100, 70000)
	b := pb.MessageBatch{Requests: []pb.Message{fullMessage(pb.Replicate, es)}}
	e := encoder{copyBelow: defaultCopyBelow}
	bufs, err := e.Encode(&b)
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, buf := range bufs {
		for _, en := range []pb.Entry{es[0], es[2]} {
			if unsafe.SliceData(buf) == unsafe.SliceData(en.Cmd) && len(buf) == len(en.Cmd) {
				found++
			}
		}
		if unsafe.SliceData(buf) == unsafe.SliceData(es[1].Cmd) {
			t.Fatal("a 100-byte command was sent from its own memory; small ones are copied")
		}
	}
	if found != 2 {
		t.Fatalf("%d of the 2 large commands sent from their own memory", found)
	}
	// Over TLS everything is one buffer.
	e = encoder{copyBelow: 1 << 62}
	if bufs, err = e.Encode(&b); err != nil || len(bufs) != 1 {
		t.Fatalf("TLS encoding: %d buffers, %v", len(bufs), err)
	}
}

func TestFrameRejectsBadFrames(t *testing.T) {
	b := pb.MessageBatch{SourceAddress: "x:1", Requests: []pb.Message{
		fullMessage(pb.Replicate, entries(100, 2000)), fullMessage(pb.Heartbeat, nil),
	}}
	e := encoder{copyBelow: defaultCopyBelow}
	bufs, err := e.Encode(&b)
	if err != nil {
		t.Fatal(err)
	}
	frame := bytes.Join(bufs, nil)

	// check runs the receiver's checks on a frame (header, CRC, decode) and returns the first error.
	check := func(f []byte) error {
		if len(f) < headerLen {
			return errShort
		}
		h, err := parseHeader(f)
		if err != nil {
			return err
		}
		p := f[headerLen:]
		if len(p) != int(h.length) {
			return errShort
		}
		if err := checkCRC(f, h, p); err != nil {
			return err
		}
		var d decoder
		_, err = d.Decode(p)
		return err
	}
	if err := check(frame); err != nil {
		t.Fatal(err)
	}
	mutate := func(f func([]byte) []byte) []byte { return f(bytes.Clone(frame)) }
	bad := map[string][]byte{
		"magic":      mutate(func(f []byte) []byte { f[0] ^= 1; return f }),
		"kind":       mutate(func(f []byte) []byte { f[4] = 9; return f }),
		"flags":      mutate(func(f []byte) []byte { f[5] = 0x80; return f }),
		"oversized":  mutate(func(f []byte) []byte { binary.LittleEndian.PutUint32(f[8:], maxFrameLen+1); return f }),
		"crc":        mutate(func(f []byte) []byte { f[12] ^= 1; return f }),
		"payload":    mutate(func(f []byte) []byte { f[len(f)-1] ^= 0x40; return f }),
		"torn":       frame[:len(frame)-7],
		"short":      frame[:headerLen-1],
		"garbage":    bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef}, 64),
		"zero bytes": make([]byte, 64),
	}
	for name, f := range bad {
		if err := check(f); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}

	// Payloads that pass the CRC (a sender's bug, or garbage that got a good CRC) but do not parse:
	// errors, never panics or huge allocations.
	p := frame[headerLen:]
	var d decoder
	for n := range len(p) {
		if _, err := d.Decode(p[:n]); err == nil {
			t.Fatalf("payload cut at %d of %d accepted", n, len(p))
		}
	}
	huge := bytes.Clone(p)
	binary.LittleEndian.PutUint32(huge[12:], 1<<31) // messages
	binary.LittleEndian.PutUint32(huge[16:], 1<<31) // entries
	if _, err := d.Decode(huge); err == nil || !errors.Is(err, errFrame) {
		t.Fatalf("absurd counts: %v", err)
	}
	trailing := append(bytes.Clone(p), 0)
	if _, err := d.Decode(trailing); err == nil || !strings.Contains(err.Error(), "after the last message") {
		t.Fatalf("trailing byte: %v", err)
	}
	for i := range 2000 { // flip bytes one at a time: any outcome but a panic
		q := bytes.Clone(p)
		q[i%len(q)] ^= byte(i/len(q) + 1)
		_, _ = d.Decode(q)
	}
}

func TestChunkFrameRoundTrip(t *testing.T) {
	c := pb.Chunk{ShardID: 5, ReplicaID: 2, From: 1, ChunkId: 3, ChunkSize: 4, ChunkCount: 9, Data: []byte("data"),
		Index: 100, Term: 4, Filepath: "snap", FileSize: 4, DeploymentId: 1, FileChunkId: 1, FileChunkCount: 2,
		HasFileInfo: true, FileInfo: pb.SnapshotFile{Filepath: "f", FileSize: 4, FileId: 2, Metadata: []byte("m")},
		BinVer: 210, OnDiskIndex: 99, Witness: false}
	f, err := encodeChunk(nil, &c)
	if err != nil {
		t.Fatal(err)
	}
	h, err := parseHeader(f)
	if err != nil || h.kind != kindChunk {
		t.Fatal(h, err)
	}
	if err := checkCRC(f, h, f[headerLen:]); err != nil {
		t.Fatal(err)
	}
	var got pb.Chunk
	if err := got.Unmarshal(f[headerLen:]); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, c) {
		t.Fatalf("chunk %+v, want %+v", got, c)
	}
}
