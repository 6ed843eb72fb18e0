// Package raftnet moves Raft messages between brokers: a dragonboat transport module
// (raftio.ITransport) in place of dragonboat's TCP transport, which copies every entry's command
// twice on the follower (into a frame buffer, then into a slice of its own per entry) and once on
// the leader (into a marshal buffer). Here a follower reads a frame into one buffer that becomes
// the backing store of its entries' commands, and a leader writes the commands from its log with
// one writev per batch.
//
// dragonboat keeps its per-target queues, batching, circuit breakers and snapshot chunking above
// this package; raftnet only moves bytes. Both ends must run it: the wire format (frame.go) is its
// own.
package raftnet

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"sync"
	"time"

	"github.com/lni/dragonboat/v4/config"
	"github.com/lni/dragonboat/v4/raftio"
	pb "github.com/lni/dragonboat/v4/raftpb"

	"github.com/sluicebroker/sluice/internal/acceptretry"
)

// Name is the transport's name as dragonboat logs it.
const Name = "sluice-raftnet"

const (
	dialTimeout      = 5 * time.Second
	handshakeTimeout = 10 * time.Second
	// writeTimeout bounds one frame's write: a peer that stops reading fails the send, and
	// dragonboat's queue reconnects (or reports the peer unreachable) rather than hanging.
	writeTimeout = 10 * time.Second
	byeTimeout   = 10 * time.Second
	keepAlive    = 10 * time.Second
	// reuseMax: a connection keeps a buffer up to this size for frames without entry data.
	reuseMax = 4 << 20
)

// Factory creates the transport (config.TransportFactory: NodeHostConfig.Expert.TransportFactory).
type Factory struct {
	Logger *slog.Logger // default slog.Default()
}

var _ config.TransportFactory = (*Factory)(nil)

// Create implements config.TransportFactory.
func (f *Factory) Create(nhc config.NodeHostConfig, onBatch raftio.MessageHandler, onChunk raftio.ChunkHandler) raftio.ITransport {
	log := f.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Transport{nhc: nhc, log: log, onBatch: onBatch, onChunk: onChunk, conns: make(map[net.Conn]struct{})}
}

// Validate implements config.TransportFactory: Raft addresses are host:port.
func (f *Factory) Validate(addr string) bool { return config.IsValidAddress(addr) }

// Transport is one NodeHost's Raft transport: a listener for peers' connections and the dialer
// of its own.
type Transport struct {
	nhc     config.NodeHostConfig
	log     *slog.Logger
	onBatch raftio.MessageHandler
	onChunk raftio.ChunkHandler

	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]struct{} // open connections, both ways, closed by Close
	closed bool
	wg     sync.WaitGroup // the accept loop and the connections' readers

	acceptFailed acceptretry.Failures // throttles the log of failing accepts
}

var _ raftio.ITransport = (*Transport)(nil)

// Name implements raftio.ITransport.
func (t *Transport) Name() string { return Name }

// Start listens on the NodeHost's listen address (its Raft address unless ListenAddress is set).
func (t *Transport) Start() error {
	serverTLS, err := t.nhc.GetServerTLSConfig()
	if err != nil {
		return fmt.Errorf("raftnet: TLS: %w", err)
	}
	ln, err := net.Listen("tcp", t.nhc.GetListenAddress())
	if err != nil {
		return fmt.Errorf("raftnet: %w", err)
	}
	t.mu.Lock()
	t.ln = ln
	t.mu.Unlock()
	t.log.Info("raftnet: Raft transport listening", "addr", ln.Addr().String(), "tls", serverTLS != nil)
	t.wg.Add(1)
	go t.accept(ln, serverTLS)
	return nil
}

// Close stops the listener, closes every connection and waits for their goroutines.
func (t *Transport) Close() error {
	t.mu.Lock()
	t.closed = true
	if t.ln != nil {
		t.ln.Close()
	}
	for c := range t.conns {
		c.Close()
	}
	t.mu.Unlock()
	t.wg.Wait()
	return nil
}

// track records c as open; false (c closed) once the transport is closing.
func (t *Transport) track(c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		c.Close()
		return false
	}
	t.conns[c] = struct{}{}
	return true
}

func (t *Transport) untrack(c net.Conn) {
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
	c.Close()
}

func (t *Transport) isClosed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closed
}

func (t *Transport) accept(ln net.Listener, serverTLS *tls.Config) {
	defer t.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			if t.isClosed() || errors.Is(err, net.ErrClosed) {
				return
			}
			t.acceptFailed.Failed(t.log, "raftnet: accept failed; retrying every 10ms (raise the open files limit if out of descriptors)", err)
			time.Sleep(acceptretry.Backoff)
			continue
		}
		if serverTLS != nil {
			c = tls.Server(c, serverTLS)
		}
		if !t.track(c) {
			continue
		}
		t.wg.Add(1)
		go t.serve(c)
	}
}

// serve reads frames from one peer's connection until it ends. A bad frame closes the connection
// (the peer reconnects and dragonboat resends what Raft still needs).
func (t *Transport) serve(c net.Conn) {
	defer t.wg.Done()
	defer t.untrack(c)
	if tc, ok := c.(*tls.Conn); ok {
		ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			if !t.isClosed() {
				t.log.Warn("raftnet: TLS handshake", "peer", c.RemoteAddr().String(), "err", err)
			}
			return
		}
	}
	var (
		hdr   [headerLen]byte
		reuse []byte
		dec   decoder
	)
	for {
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			if err != io.EOF && !t.isClosed() {
				t.log.Info("raftnet: connection ended", "peer", c.RemoteAddr().String(), "err", err)
			}
			return
		}
		err := t.frame(c, hdr[:], &reuse, &dec)
		if err == errBye {
			return
		}
		if err != nil {
			if !t.isClosed() {
				t.log.Warn("raftnet: closing connection", "peer", c.RemoteAddr().String(), "err", err)
			}
			return
		}
	}
}

var errBye = errors.New("raftnet: bye")

// frame reads and handles the frame whose header is hdr.
func (t *Transport) frame(c net.Conn, hdr []byte, reuse *[]byte, dec *decoder) error {
	h, err := parseHeader(hdr)
	if err != nil {
		return err
	}
	var p []byte
	if h.flags&flagEntryData != 0 {
		// The entries will alias this buffer until dragonboat drops them: one of its own.
		p = make([]byte, h.length)
	} else {
		if cap(*reuse) < int(h.length) {
			if h.length > reuseMax {
				p = make([]byte, h.length)
			} else {
				*reuse = make([]byte, max(h.length, 64<<10))
			}
		}
		if p == nil {
			p = (*reuse)[:h.length]
		}
	}
	if _, err := io.ReadFull(c, p); err != nil {
		return fmt.Errorf("%w: torn: %v", errFrame, err)
	}
	if err := checkCRC(hdr, h, p); err != nil {
		return err
	}
	switch h.kind {
	case kindBatch:
		b, err := dec.Decode(p)
		if err != nil {
			return err
		}
		if h.flags&flagEntryData == 0 && hasEntryData(&b) {
			return fmt.Errorf("%w: entry data in a frame not flagged so", errFrame)
		}
		t.onBatch(b)
	case kindChunk:
		var ch pb.Chunk
		if err := ch.Unmarshal(p); err != nil { // copies the data out of p
			return fmt.Errorf("%w: snapshot chunk: %v", errFrame, err)
		}
		if !t.onChunk(ch) {
			return fmt.Errorf("raftnet: snapshot chunk %d of shard %d from replica %d rejected", ch.ChunkId, ch.ShardID, ch.From)
		}
	case kindBye:
		_ = c.SetWriteDeadline(time.Now().Add(byeTimeout))
		_, _ = c.Write(controlFrame(kindByeAck))
		return errBye
	default:
		return fmt.Errorf("%w: unexpected frame kind %d", errFrame, h.kind)
	}
	return nil
}

// hasEntryData reports whether some entry of b has a command (which would alias a reused buffer).
func hasEntryData(b *pb.MessageBatch) bool {
	for i := range b.Requests {
		for j := range b.Requests[i].Entries {
			if len(b.Requests[i].Entries[j].Cmd) > 0 {
				return true
			}
		}
	}
	return false
}

// dial connects to target (a Raft address), over TLS when the NodeHost uses mutual TLS.
func (t *Transport) dial(ctx context.Context, target string) (net.Conn, bool, error) {
	d := net.Dialer{Timeout: dialTimeout, KeepAlive: keepAlive}
	c, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		return nil, false, err
	}
	clientTLS, err := t.nhc.GetClientTLSConfig(target)
	if err != nil {
		c.Close()
		return nil, false, fmt.Errorf("raftnet: TLS: %w", err)
	}
	if clientTLS != nil {
		tc := tls.Client(c, clientTLS)
		hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			tc.Close()
			return nil, false, err
		}
		c = tc
	}
	if !t.track(c) {
		return nil, false, errors.New("raftnet: transport closed")
	}
	return c, clientTLS != nil, nil
}

// GetConnection implements raftio.ITransport: a connection for message batches to target.
func (t *Transport) GetConnection(ctx context.Context, target string) (raftio.IConnection, error) {
	c, encrypted, err := t.dial(ctx, target)
	if err != nil {
		return nil, err
	}
	mc := &msgConn{t: t, c: c}
	mc.enc.copyBelow = defaultCopyBelow
	if encrypted {
		mc.enc.copyBelow = math.MaxInt
	}
	return mc, nil
}

// GetSnapshotConnection implements raftio.ITransport: a connection for one snapshot's chunks.
func (t *Transport) GetSnapshotConnection(ctx context.Context, target string) (raftio.ISnapshotConnection, error) {
	c, _, err := t.dial(ctx, target)
	if err != nil {
		return nil, err
	}
	return &chunkConn{t: t, c: c}, nil
}

// msgConn sends message batches; dragonboat uses each from one goroutine.
type msgConn struct {
	t   *Transport
	c   net.Conn
	enc encoder
	out net.Buffers // the frame being written (a field: WriteTo on a local would allocate it)
}

// SendMessageBatch implements raftio.IConnection.
func (m *msgConn) SendMessageBatch(b pb.MessageBatch) error {
	bufs, err := m.enc.Encode(&b)
	if err != nil {
		return err
	}
	defer m.enc.clear()
	if err := m.c.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		return err
	}
	if len(bufs) == 1 {
		_, err = m.c.Write(bufs[0])
		return err
	}
	m.out = bufs
	_, err = m.out.WriteTo(m.c) // writev on TCP
	m.out = nil
	return err
}

// Close implements raftio.IConnection.
func (m *msgConn) Close() { m.t.untrack(m.c) }

// chunkConn sends one snapshot's chunks.
type chunkConn struct {
	t   *Transport
	c   net.Conn
	buf []byte
}

// SendChunk implements raftio.ISnapshotConnection.
func (s *chunkConn) SendChunk(ch pb.Chunk) error {
	b, err := encodeChunk(s.buf, &ch)
	if err != nil {
		return err
	}
	s.buf = b
	if err := s.c.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		return err
	}
	_, err = s.c.Write(b)
	return err
}

// Close implements raftio.ISnapshotConnection: it says bye and waits (briefly) for the receiver
// to have taken every chunk before closing.
func (s *chunkConn) Close() {
	defer s.t.untrack(s.c)
	if err := s.c.SetDeadline(time.Now().Add(byeTimeout)); err != nil {
		return
	}
	if _, err := s.c.Write(controlFrame(kindBye)); err != nil {
		return
	}
	var ack [headerLen]byte
	if _, err := io.ReadFull(s.c, ack[:]); err != nil {
		s.t.log.Debug("raftnet: no goodbye from the snapshot's receiver", "err", err)
		return
	}
	if h, err := parseHeader(ack[:]); err != nil || h.kind != kindByeAck {
		s.t.log.Debug("raftnet: unexpected answer to goodbye", "err", err, "kind", h.kind)
	}
}
