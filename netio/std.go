package netio

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/sluicebroker/sluice/internal/acceptretry"
)

// The std backend: per connection, a reader goroutine that parses frames and a writer goroutine that
// drains the response queue with blocking writes. Back-pressure is real: at MaxInFlight the reader
// stops reading the socket, so TCP flow control pushes back on the client.

const stdReadBuffer = 32 << 10

type stdServer struct {
	core      *core
	ln        *net.TCPListener
	wg        sync.WaitGroup
	closeOnce sync.Once

	mu     sync.Mutex
	conns  map[*stdConn]struct{}
	closed bool
}

type stdConn struct {
	srv  *stdServer
	conn *Conn
	tc   *net.TCPConn
	// rw is what frames are read from and written to: tc, or a *tls.Conn over it (tls.go).
	rw   net.Conn
	tlsc *tls.Conn
	br   *bufio.Reader
	hdr  [4]byte

	wakeCh     chan struct{} // writer: something to drain
	roomCh     chan struct{} // reader: head advanced
	writerDone chan struct{}
	killOnce   sync.Once

	bufs net.Buffers
	file stdFileSender // per-platform sendfile state
}

func listenStd(addr string, co *core) (backendServer, net.Addr, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("netio: listen %s: %w", addr, err)
	}
	s := &stdServer{core: co, ln: l.(*net.TCPListener), conns: make(map[*stdConn]struct{})}
	s.wg.Add(1)
	go s.acceptLoop()
	return s, l.Addr(), nil
}

func (s *stdServer) acceptLoop() {
	defer s.wg.Done()
	for {
		tc, err := s.ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors and the like: back off instead of spinning.
			s.core.acceptFailed.Failed(s.core.log, acceptFailedMsg, err)
			time.Sleep(acceptretry.Backoff)
			continue
		}
		_ = tc.SetNoDelay(true)
		sc := &stdConn{
			srv:        s,
			tc:         tc,
			rw:         tc,
			wakeCh:     make(chan struct{}, 1),
			roomCh:     make(chan struct{}, 1),
			writerDone: make(chan struct{}),
		}
		if s.core.opts.TLS != nil {
			sc.tlsc = tls.Server(tc, s.core.opts.TLS)
			sc.rw = sc.tlsc
		}
		sc.br = bufio.NewReaderSize(sc.rw, stdReadBuffer)
		sc.conn = newConn(s.core, sc, tc.RemoteAddr(), tc.LocalAddr())
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			_ = tc.Close()
			return
		}
		s.conns[sc] = struct{}{}
		s.wg.Add(2)
		s.mu.Unlock()
		go sc.writeLoop()
		go sc.readLoop()
	}
}

func (s *stdServer) close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		_ = s.ln.Close()
		s.mu.Lock()
		for sc := range s.conns {
			sc.kill()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return nil
}

func (sc *stdConn) wake() {
	select {
	case sc.wakeCh <- struct{}{}:
	default:
	}
}

func (sc *stdConn) resumeReader() {
	select {
	case sc.roomCh <- struct{}{}:
	default:
	}
}

func (sc *stdConn) close() { sc.kill() }

// kill closes the socket and stops both goroutines; the writer sweeps the queue.
func (sc *stdConn) kill() {
	sc.killOnce.Do(func() {
		sc.conn.markClosed()
		_ = sc.tc.Close()
		sc.wake()
		sc.resumeReader()
	})
}

func (sc *stdConn) readLoop() {
	defer sc.srv.wg.Done()
	reason := sc.handshake()
	if reason == "" {
		reason = sc.readFrames()
	}
	if reason != "" {
		sc.srv.core.log.Warn("netio: closing connection", "remote", sc.conn.RemoteAddr, "reason", reason)
	}
	sc.kill()
	<-sc.writerDone
	sc.srv.core.handler.ConnClosed(sc.conn)
	sc.srv.mu.Lock()
	delete(sc.srv.conns, sc)
	sc.srv.mu.Unlock()
}

// readFrames reads and dispatches frames until the connection ends; it returns a reason when the
// client sent garbage.
func (sc *stdConn) readFrames() string {
	c := sc.conn
	maxFrame := c.core.opts.MaxFrameBytes
	for sc.waitRoom() {
		if _, err := io.ReadFull(sc.br, sc.hdr[:]); err != nil {
			return ""
		}
		size := int32(binary.BigEndian.Uint32(sc.hdr[:]))
		if reason := checkFrameSize(size, maxFrame); reason != "" {
			return reason
		}
		buf := startFrame(int(size))
		for got := 0; ; {
			n, err := io.ReadFull(sc.br, (*buf)[got:])
			if err != nil {
				putFrame(buf)
				return ""
			}
			if got += n; got == int(size) {
				break
			}
			buf = growFrame(buf, int(size))
		}
		c.dispatch(buf)
	}
	return ""
}

// waitRoom blocks while MaxInFlight requests are outstanding (or a CloseConn is pending); false means
// the connection is closed.
func (sc *stdConn) waitRoom() bool {
	c := sc.conn
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return false
		}
		if c.tail-c.head < c.max && !c.closing {
			c.mu.Unlock()
			return true
		}
		c.readerWaiting = true
		c.resumeAt = c.max - 1
		c.mu.Unlock()
		<-sc.roomCh
	}
}

func (sc *stdConn) writeLoop() {
	defer sc.srv.wg.Done()
	defer close(sc.writerDone)
	c := sc.conn
	for range sc.wakeCh {
		res, reason, err := c.drain(sc)
		if res == drainIdle {
			continue
		}
		switch res {
		case drainClose:
			c.core.log.Info("netio: closing connection", "remote", c.RemoteAddr, "reason", reason)
			// FIN right behind the last response, before close may reset a connection with unread input.
			_ = sc.tc.CloseWrite()
		case drainFailed:
			c.core.logWriteFailure(c, err)
		}
		break
	}
	sc.kill()
	c.sweep()
}

// writeBytes blocks until everything is written: the writer goroutine owns the socket.
func (sc *stdConn) writeBytes(iov *[][]byte) error {
	sc.bufs = *iov
	_, err := sc.bufs.WriteTo(sc.rw)
	sc.bufs = nil
	if err == nil {
		clear(*iov)
		*iov = (*iov)[:0]
	}
	return err
}

func (sc *stdConn) sendFile(f *os.File, off, n int64) (int64, error) {
	if sc.tlsc != nil {
		return copyFileRange(sc.tlsc, f, off, n) // TLS encrypts in user space: no sendfile
	}
	return sc.file.send(sc.tc, f, off, n)
}

// checkFrameSize returns why a frame of this size is refused, or "".
func checkFrameSize(size, maxFrame int32) string {
	switch {
	case size < 0:
		return fmt.Sprintf("negative frame size %d", size)
	case size > maxFrame:
		return fmt.Sprintf("frame size %d above limit %d", size, maxFrame)
	case size < minFrameBytes:
		return fmt.Sprintf("frame size %d below a request header (%d)", size, minFrameBytes)
	}
	return ""
}
