package raftnet

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/lni/dragonboat/v4/config"
	pb "github.com/lni/dragonboat/v4/raftpb"

	"github.com/sluicebroker/sluice/internal/testcluster"
)

// peer is a started Transport whose received batches and chunks arrive on channels.
type peer struct {
	t      *Transport
	addr   string
	batch  chan pb.MessageBatch
	chunk  chan pb.Chunk
	accept bool // what the chunk handler answers
}

func startPeer(t *testing.T) *peer {
	t.Helper()
	addr, err := testcluster.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	p := &peer{addr: addr, batch: make(chan pb.MessageBatch, 16), chunk: make(chan pb.Chunk, 16), accept: true}
	f := &Factory{}
	tr := f.Create(config.NodeHostConfig{RaftAddress: addr},
		func(b pb.MessageBatch) { p.batch <- b },
		func(c pb.Chunk) bool { p.chunk <- c; return p.accept })
	if err := tr.Start(); err != nil {
		t.Fatal(err)
	}
	p.t = tr.(*Transport)
	t.Cleanup(func() { p.t.Close() })
	return p
}

func recv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatal("nothing received")
	}
	var zero T
	return zero
}

func TestTransportMovesBatchesAndChunks(t *testing.T) {
	a, b := startPeer(t), startPeer(t)
	ctx := context.Background()
	conn, err := a.t.GetConnection(ctx, b.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	batches := []pb.MessageBatch{
		{DeploymentId: 1, BinVer: 210, SourceAddress: a.addr, Requests: []pb.Message{fullMessage(pb.Heartbeat, nil)}},
		{DeploymentId: 1, BinVer: 210, SourceAddress: a.addr, Requests: []pb.Message{
			fullMessage(pb.Replicate, entries(100, 0, 4096, 300000, 600)), snapshotMessage()}},
		{DeploymentId: 1, BinVer: 210, SourceAddress: a.addr, Requests: []pb.Message{fullMessage(pb.ReplicateResp, nil)}},
	}
	for _, bt := range batches {
		if err := conn.SendMessageBatch(bt); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range batches {
		sameBatch(t, want, recv(t, b.batch))
	}

	sc, err := a.t.GetSnapshotConnection(ctx, b.addr)
	if err != nil {
		t.Fatal(err)
	}
	chunks := []pb.Chunk{
		{ShardID: 5, ChunkId: 0, ChunkCount: 2, Data: bytes.Repeat([]byte("x"), 2<<20), Filepath: "f"},
		{ShardID: 5, ChunkId: 1, ChunkCount: 2, Data: []byte("end"), Filepath: "f"},
	}
	for _, c := range chunks {
		if err := sc.SendChunk(c); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan struct{})
	go func() { sc.Close(); close(done) }() // waits for the receiver's goodbye
	for _, want := range chunks {
		got := recv(t, b.chunk)
		if got.ChunkId != want.ChunkId || !bytes.Equal(got.Data, want.Data) {
			t.Fatalf("chunk %d: %d bytes, want chunk %d", got.ChunkId, len(got.Data), want.ChunkId)
		}
	}
	recv(t, done)
}

// TestTransportClosesOnBadFrames: garbage, a torn frame or a bad CRC closes the connection; the
// transport keeps serving others.
func TestTransportClosesOnBadFrames(t *testing.T) {
	b := startPeer(t)
	var e encoder
	bufs, err := e.Encode(&pb.MessageBatch{SourceAddress: "x:1", Requests: []pb.Message{fullMessage(pb.Replicate, entries(1000))}})
	if err != nil {
		t.Fatal(err)
	}
	good := bytes.Join(bufs, nil)
	badCRC := bytes.Clone(good)
	badCRC[len(badCRC)-5] ^= 1
	huge := bytes.Clone(good)
	huge[11] = 0x7f // a length past maxFrameLen
	for name, send := range map[string][]byte{
		"garbage":  bytes.Repeat([]byte("GET / HTTP/1.1\r\n"), 4),
		"crc":      badCRC,
		"oversize": huge,
		"torn":     good[:len(good)-10],
	} {
		c, err := net.Dial("tcp", b.addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(send); err != nil {
			t.Fatal(err)
		}
		if name == "torn" {
			c.(*net.TCPConn).CloseWrite()
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		// EOF, or a reset when the transport closed with the frame's rest unread.
		if n, err := c.Read(make([]byte, 1)); err != io.EOF && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("%s: the transport did not close the connection: %d, %v", name, n, err)
		}
		c.Close()
		select {
		case got := <-b.batch:
			t.Fatalf("%s: delivered %+v", name, got)
		default:
		}
	}
	// Still serving.
	c, err := net.Dial("tcp", b.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(good); err != nil {
		t.Fatal(err)
	}
	recv(t, b.batch)
}

// TestTransportCloseLeavesNoGoroutines: Close ends the accept loop and every connection's reader,
// in and out.
func TestTransportCloseLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	a, b := startPeer(t), startPeer(t)
	ctx := context.Background()
	for range 3 {
		c, err := a.t.GetConnection(ctx, b.addr)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.SendMessageBatch(pb.MessageBatch{SourceAddress: a.addr, Requests: []pb.Message{fullMessage(pb.Heartbeat, nil)}}); err != nil {
			t.Fatal(err)
		}
		recv(t, b.batch)
	}
	if _, err := b.t.GetConnection(ctx, a.addr); err != nil {
		t.Fatal(err)
	}
	a.t.Close()
	b.t.Close()
	if _, err := a.t.GetConnection(ctx, b.addr); err == nil {
		t.Fatal("connected through a closed transport")
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines after Close, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

// TestTransportDialFailure: an unreachable peer is an error from GetConnection, soon.
func TestTransportDialFailure(t *testing.T) {
	a := startPeer(t)
	addr, err := testcluster.FreeAddr() // nobody listens there
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := a.t.GetConnection(context.Background(), addr); err == nil {
		t.Fatal("connected to nobody")
	}
	if d := time.Since(start); d > dialTimeout+time.Second {
		t.Fatalf("took %v", d)
	}
}
