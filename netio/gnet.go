//go:build linux || darwin || dragonfly || freebsd || netbsd || openbsd

package netio

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"
)

// The gnet backend: a connection's frames are parsed and handed to the Handler on its event loop, in
// OnTraffic, and its responses are written there too (answers from other goroutines wake the loop).
// Responses bypass gnet's outbound buffer: netio writes them to the socket itself (writev straight
// from the response's buffers, sendfile for file ranges). When the socket is full, the drain stops
// and a side poller resumes it once the socket is writable. At MaxInFlight, reading pauses (see
// updateReading).
//
// A connection's descriptor belongs to gnet, which closes it right after OnClose; fdMu keeps writers
// and OnClose apart so nobody writes to a closed (and maybe reused) descriptor.

const gnetSupported = true

// gnetSendBudget bounds the bytes one drain writes before yielding (through the side poller), so a
// fast reader of a huge fetch cannot monopolize a loop or the poller.
const gnetSendBudget = 4 << 20

type gnetServer struct {
	gnet.BuiltinEventEngine
	core   *core
	engine gnet.Engine
	addr   net.Addr
	waiter *writableWaiter

	booted  chan struct{} // closed by the first OnBoot
	bootErr error
	done    chan struct{} // run returned: gnet's engine stopped for good
	stop    chan struct{} // closed by close: no more restarts
	runErr  error

	// wakeMu keeps Wake and Close off gnet's pollers once shutdown starts: gnet closes their
	// descriptors when it stops, and a late Wake would write to a reused descriptor. (An engine that
	// stops on its own closes its connections first: fdClosed keeps those off.) It also guards engine,
	// which a restart replaces.
	wakeMu    sync.RWMutex
	stopping  bool
	closeOnce sync.Once
}

type gnetConn struct {
	srv  *gnetServer
	conn *Conn
	gc   gnet.Conn
	fd   int

	// Reader state, loop only. Frame being read: header bytes first, then the body.
	hdr      [4]byte
	hdrGot   int
	frame    *[]byte
	size     int // of the frame
	got      int
	paused   bool // stopped at MaxInFlight with bytes left unparsed
	loopEpfd int  // the loop's epoll set, for pausing reads; -1 if unknown
	readOff  bool // EPOLLIN is off

	// Writer state, drainer only.
	budget int64         // bytes left for this drain
	sfOff  int64         // sendfile's offset argument
	vecs   []unix.Iovec  // writev's argument
	wait   writableState // side poller registration

	fdMu     sync.Mutex
	fdClosed bool // OnClose ran: gnet is closing the descriptor
}

func listenGnet(addr string, co *core) (backendServer, net.Addr, error) {
	w, err := newWritableWaiter()
	if err != nil {
		return nil, nil, err
	}
	s := &gnetServer{core: co, waiter: w, booted: make(chan struct{}), done: make(chan struct{}), stop: make(chan struct{})}
	go s.run(addr)
	select {
	case <-s.booted:
		return s, s.addr, nil
	case <-s.done:
		w.close()
		err := s.runErr
		if err == nil {
			err = s.bootErr
		}
		if err == nil {
			err = errors.New("gnet stopped while starting")
		}
		return nil, nil, fmt.Errorf("netio: listen %s: %w", addr, err)
	}
}

// gnetRestartBackoff is the first wait before gnet's engine is started again after it stopped on its
// own; it doubles up to gnetRestartBackoffMax while restarts keep failing.
const (
	gnetRestartBackoff    = 100 * time.Millisecond
	gnetRestartBackoffMax = 5 * time.Second
)

// run runs gnet's engine until close, starting it again when it stops on its own. gnet stops the
// whole engine, listener and every connection, when an accept fails with anything but a retryable
// error: EMFILE among them, which is what a burst of connections or churn at the open files limit
// brings. Without a restart the broker would live on, serving nobody, until restarted by hand; with
// it, clients see their connections drop (Kafka clients reconnect) and are served again once
// descriptors are free.
func (s *gnetServer) run(addr string) {
	defer close(s.done)
	opts := []gnet.Option{
		gnet.WithMulticore(true),
		gnet.WithNumEventLoop(s.core.opts.Loops),
		gnet.WithReuseAddr(true),
		gnet.WithTCPNoDelay(gnet.TCPNoDelay),
		gnet.WithTCPKeepAlive(15 * time.Second), // as Go's net does: find clients that vanished
		gnet.WithLogger(gnetLogger{s.core.log}),
	}
	backoff := gnetRestartBackoff
	for {
		started := time.Now()
		err := gnet.Run(s, "tcp://"+addr, opts...)
		select {
		case <-s.booted:
		default: // the first start failed: Listen reports it
			s.runErr = err
			return
		}
		s.wakeMu.RLock()
		stopping := s.stopping
		s.wakeMu.RUnlock()
		if stopping {
			s.runErr = err
			return
		}
		if time.Since(started) > time.Minute {
			backoff = gnetRestartBackoff // it ran well: a new episode
		}
		s.core.log.Error("netio: gnet engine stopped; starting it again", "addr", s.addr, "err", err, "in", backoff)
		select {
		case <-s.stop:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, gnetRestartBackoffMax)
		addr = s.addr.String() // the port bound first, also when port 0 was asked for
	}
}

// OnBoot learns the bound address from a duplicate of the listener (gnet only knows the requested one,
// port 0 included) on the first start.
func (s *gnetServer) OnBoot(e gnet.Engine) gnet.Action {
	s.wakeMu.Lock()
	defer s.wakeMu.Unlock()
	if s.stopping { // closed while a restart was under way
		return gnet.Shutdown
	}
	s.engine = e
	if s.addr != nil {
		return gnet.None
	}
	fd, err := e.Dup()
	if err != nil {
		s.bootErr = err
		return gnet.Shutdown
	}
	sa, err := unix.Getsockname(fd)
	_ = unix.Close(fd)
	if err != nil {
		s.bootErr = err
		return gnet.Shutdown
	}
	s.addr = sockaddrToTCP(sa)
	close(s.booted)
	return gnet.None
}

func (s *gnetServer) close() error {
	s.closeOnce.Do(func() {
		s.wakeMu.Lock()
		s.stopping = true
		e := s.engine
		s.wakeMu.Unlock()
		close(s.stop)
		// A cancelled context makes Stop only signal; Run returns once the loops are gone. An engine
		// that already stopped on its own says so, and run returns without starting another.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_ = e.Stop(ctx)
		<-s.done
		s.waiter.close()
	})
	return s.runErr
}

func (s *gnetServer) OnOpen(gc gnet.Conn) ([]byte, gnet.Action) {
	_ = gc.SetNoDelay(true)
	g := &gnetConn{srv: s, gc: gc, fd: gc.Fd(), loopEpfd: -1}
	if fd, ok := loopEpollFd(gc); ok {
		g.loopEpfd = fd
	}
	var local net.Addr = s.addr
	if sa, err := unix.Getsockname(g.fd); err == nil {
		local = sockaddrToTCP(sa)
	}
	g.conn = newConn(s.core, g, cloneAddr(gc.RemoteAddr()), local)
	gc.SetContext(g)
	return nil, gnet.None
}

func (s *gnetServer) OnTraffic(gc gnet.Conn) gnet.Action {
	g, _ := gc.Context().(*gnetConn)
	if g == nil {
		return gnet.Close
	}
	c := g.conn
	for {
		// Own the writer while dispatching, so answers given inside HandleRequest are written
		// together, in one writev, below.
		owner := c.tryDrain()
		reason := g.readFrames()
		if owner && !g.runDrain() {
			return gnet.Close
		}
		if reason != "" {
			s.core.log.Warn("netio: closing connection", "remote", c.RemoteAddr, "reason", reason)
			return gnet.Close
		}
		if !g.updateReading() {
			return gnet.None
		}
		// Room appeared while frames wait in gnet's buffer: parse them.
	}
}

func (s *gnetServer) OnClose(gc gnet.Conn, _ error) gnet.Action {
	g, _ := gc.Context().(*gnetConn)
	if g == nil {
		return gnet.None
	}
	g.fdMu.Lock()
	g.fdClosed = true
	s.waiter.forget(g)
	g.fdMu.Unlock()
	if g.frame != nil {
		putFrame(g.frame)
		g.frame = nil
	}
	g.conn.closeAndSweep()
	s.core.handler.ConnClosed(g.conn)
	return gnet.None
}

// readFrames parses and dispatches the buffered frames while there is room; it returns a reason when
// the client sent garbage.
func (g *gnetConn) readFrames() string {
	c, gc := g.conn, g.gc
	for gc.InboundBuffered() > 0 {
		if g.frame == nil {
			if !c.hasRoom() {
				g.paused = true
				return ""
			}
			g.paused = false
			n, _ := gc.Read(g.hdr[g.hdrGot:])
			if g.hdrGot += n; g.hdrGot < len(g.hdr) {
				return ""
			}
			size := int32(binary.BigEndian.Uint32(g.hdr[:]))
			if reason := checkFrameSize(size, c.core.opts.MaxFrameBytes); reason != "" {
				return reason
			}
			g.frame, g.size, g.got, g.hdrGot = startFrame(int(size)), int(size), 0, 0
		}
		if g.got == len(*g.frame) {
			g.frame = growFrame(g.frame, g.size)
		}
		n, _ := gc.Read((*g.frame)[g.got:])
		if g.got += n; g.got < g.size {
			continue // the buffer is full (it grows) or gnet's is empty (the loop ends)
		}
		buf := g.frame
		g.frame = nil
		c.dispatch(buf)
	}
	g.paused = false
	return ""
}

// updateReading decides, at the end of OnTraffic, whether the socket is read: it pauses at
// MaxInFlight (or once a CloseConn is pending) and resumes when at most half as many requests are in
// flight, so a client that keeps the limit busy costs one epoll_ctl per burst rather than per request.
// While paused, the first retire that gets below that mark wakes the loop (resumeReader). It returns
// true when there is room for frames that already wait in gnet's buffer.
func (g *gnetConn) updateReading() bool {
	c := g.conn
	c.mu.Lock()
	inFlight := c.tail - c.head
	room := inFlight < c.max && !c.closing && !c.closed
	if room && g.paused && g.gc.InboundBuffered() > 0 {
		c.mu.Unlock()
		return true
	}
	resume := room && inFlight <= c.max/2
	pause := !room || ((g.readOff || g.paused) && !resume)
	if pause && !c.closing && !c.closed {
		c.readerWaiting = true
		c.resumeAt = c.max / 2
	}
	c.mu.Unlock()
	if pause != g.readOff {
		g.setReading(!pause)
	}
	return false
}

// runDrain writes what is answered, on the calling goroutine, and deals with the outcome. It returns
// false when the connection is closing. The caller owns the writer (wstate running).
func (g *gnetConn) runDrain() bool {
	c := g.conn
	g.budget = gnetSendBudget
	res, reason, err := c.drain(g)
	switch res {
	case drainIdle:
		return true
	case drainBlocked:
		g.fdMu.Lock()
		if !g.fdClosed {
			g.srv.waiter.arm(g)
		}
		g.fdMu.Unlock()
		return true
	case drainClose:
		c.core.log.Info("netio: closing connection", "remote", c.RemoteAddr, "reason", reason)
		g.fdMu.Lock()
		if !g.fdClosed {
			// FIN right behind the last response, before close may reset a connection with unread input.
			_ = unix.Shutdown(g.fd, unix.SHUT_WR)
		}
		g.fdMu.Unlock()
	case drainFailed:
		c.core.logWriteFailure(c, err)
	}
	c.sweep()
	g.close()
	return false
}

// wake gets the loop to drain: answers that arrive meanwhile go out in the same writev. (Writing on
// the answering goroutine instead measured 2-3x slower with pipelined requests: one writev each.)
func (g *gnetConn) wake() { g.wakeLoop() }

// resumeReader gets the loop to parse buffered frames and read the socket again.
func (g *gnetConn) resumeReader() { g.wakeLoop() }

// wakeLoop triggers OnTraffic on g's loop.
func (g *gnetConn) wakeLoop() {
	s := g.srv
	s.wakeMu.RLock()
	if !s.stopping {
		g.fdMu.Lock()
		if !g.fdClosed {
			_ = g.gc.Wake(nil)
		}
		g.fdMu.Unlock()
	}
	s.wakeMu.RUnlock()
}

func (g *gnetConn) close() {
	s := g.srv
	s.wakeMu.RLock()
	if !s.stopping {
		g.fdMu.Lock()
		if !g.fdClosed {
			_ = g.gc.Close()
		}
		g.fdMu.Unlock()
	}
	s.wakeMu.RUnlock()
}

// pausesReads reports whether reads can pause at MaxInFlight (the loop's epoll set was found).
func (g *gnetConn) pausesReads() bool { return g.loopEpfd >= 0 }

// writeBytes writes with writev(2) until the socket is full or the budget is spent.
func (g *gnetConn) writeBytes(iov *[][]byte) error {
	g.fdMu.Lock()
	defer g.fdMu.Unlock()
	if g.fdClosed {
		return errConnClosed
	}
	for len(*iov) > 0 {
		if g.budget <= 0 {
			return errWouldBlock
		}
		g.vecs = g.vecs[:0]
		for _, b := range *iov {
			v := unix.Iovec{Base: &b[0]}
			v.SetLen(len(b))
			g.vecs = append(g.vecs, v)
		}
		n, _, errno := unix.Syscall(unix.SYS_WRITEV, uintptr(g.fd), uintptr(unsafe.Pointer(&g.vecs[0])), uintptr(len(g.vecs)))
		clear(g.vecs) // do not keep response buffers reachable
		switch errno {
		case 0:
		case unix.EAGAIN:
			return errWouldBlock
		case unix.EINTR:
			continue
		default:
			return os.NewSyscallError("writev", errno)
		}
		g.budget -= int64(n)
		consumeIov(iov, int(n))
	}
	return nil
}

func sockaddrToTCP(sa unix.Sockaddr) *net.TCPAddr {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(append([]byte(nil), a.Addr[:]...)), Port: a.Port}
	case *unix.SockaddrInet6:
		a6 := &net.TCPAddr{IP: net.IP(append([]byte(nil), a.Addr[:]...)), Port: a.Port}
		if a.ZoneId != 0 {
			if ifi, err := net.InterfaceByIndex(int(a.ZoneId)); err == nil {
				a6.Zone = ifi.Name
			}
		}
		return a6
	}
	return nil
}

// cloneAddr copies gnet's address: gnet recycles the zone's bytes when the connection closes.
func cloneAddr(a net.Addr) net.Addr {
	if t, ok := a.(*net.TCPAddr); ok {
		return &net.TCPAddr{IP: append(net.IP(nil), t.IP...), Port: t.Port, Zone: strings.Clone(t.Zone)}
	}
	return a
}

// gnetLogger routes gnet's logging to slog; gnet's Info lines are start-up chatter, so they go to Debug.
type gnetLogger struct{ l *slog.Logger }

func (g gnetLogger) logf(level slog.Level, format string, args []any) {
	if g.l.Enabled(context.Background(), level) {
		g.l.Log(context.Background(), level, fmt.Sprintf(format, args...), "component", "gnet")
	}
}

func (g gnetLogger) Debugf(format string, args ...any) { g.logf(slog.LevelDebug, format, args) }
func (g gnetLogger) Infof(format string, args ...any)  { g.logf(slog.LevelDebug, format, args) }
func (g gnetLogger) Warnf(format string, args ...any)  { g.logf(slog.LevelWarn, format, args) }
func (g gnetLogger) Errorf(format string, args ...any) { g.logf(slog.LevelError, format, args) }
func (g gnetLogger) Fatalf(format string, args ...any) { g.logf(slog.LevelError, format, args) }
