//go:build linux || darwin || dragonfly || freebsd || netbsd || openbsd

package netio

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"
)

// The gnet backend: event loops own the sockets. Everything for one connection (reading frames,
// HandleRequest, writing responses) runs on its loop inside OnTraffic. Answers from other goroutines
// reach the loop through gnet's Wake. gnet reads sockets eagerly and offers no way to pause reading:
// at MaxInFlight frames stay unparsed in gnet's inbound buffer until responses drain.

const gnetSupported = true

// gnetSendBudget bounds the file bytes one connection sends per loop turn, so a fast reader of a huge
// fetch cannot starve the loop's other connections.
const gnetSendBudget = 4 << 20

type gnetServer struct {
	gnet.BuiltinEventEngine
	core   *core
	engine gnet.Engine
	addr   net.Addr
	waiter *writableWaiter

	booted  chan struct{}
	bootErr error
	done    chan struct{} // gnet.Run returned
	runErr  error

	// wakeMu keeps Wake and Close off gnet's pollers once shutdown starts: gnet closes their
	// descriptors when it stops, and a late Wake would write to a reused descriptor.
	wakeMu    sync.RWMutex
	stopping  bool
	closeOnce sync.Once
}

type gnetConn struct {
	srv  *gnetServer
	conn *Conn
	gc   gnet.Conn

	// Frame being read: header bytes first, then the body into a pooled buffer.
	hdr    [4]byte
	hdrGot int
	frame  *[]byte
	got    int
	paused bool // stopped at MaxInFlight with bytes left unparsed

	closed bool  // OnClose ran (gnet closed the descriptor)
	budget int64 // file bytes left for this loop turn
	sfOff  int64 // sendfile's offset argument
	armed  bool  // registered with the writable waiter

	loopEpfd    int  // the loop's epoll set, for pausing reads; -1 if unknown
	readOff     bool // EPOLLIN is off: paused at MaxInFlight
	lastInbound int  // unparsed bytes when OnTraffic last returned
}

func listenGnet(addr string, co *core) (backendServer, net.Addr, error) {
	w, err := newWritableWaiter()
	if err != nil {
		return nil, nil, err
	}
	s := &gnetServer{core: co, waiter: w, booted: make(chan struct{}), done: make(chan struct{})}
	opts := []gnet.Option{
		gnet.WithMulticore(true),
		gnet.WithNumEventLoop(co.opts.Loops),
		gnet.WithReuseAddr(true),
		gnet.WithTCPNoDelay(gnet.TCPNoDelay),
		gnet.WithLogger(gnetLogger{co.log}),
	}
	go func() {
		s.runErr = gnet.Run(s, "tcp://"+addr, opts...)
		select {
		case <-s.booted:
			s.wakeMu.RLock()
			if !s.stopping {
				// gnet stops its whole engine on some accept errors (EMFILE among them).
				co.log.Error("netio: gnet engine stopped", "addr", s.addr, "err", s.runErr)
			}
			s.wakeMu.RUnlock()
		default: // Listen reports it
		}
		close(s.done)
	}()
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

// OnBoot learns the bound address from a duplicate of the listener (gnet only knows the requested one,
// port 0 included).
func (s *gnetServer) OnBoot(e gnet.Engine) gnet.Action {
	s.engine = e
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
		s.wakeMu.Unlock()
		// A cancelled context makes Stop only signal; Run returns once the loops are gone.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_ = s.engine.Stop(ctx)
		<-s.done
		s.waiter.close()
	})
	return s.runErr
}

func (s *gnetServer) OnOpen(gc gnet.Conn) ([]byte, gnet.Action) {
	_ = gc.SetNoDelay(true)
	g := &gnetConn{srv: s, gc: gc, loopEpfd: -1}
	if fd, ok := loopEpollFd(gc); ok {
		g.loopEpfd = fd
	}
	var local net.Addr = s.addr
	if sa, err := unix.Getsockname(gc.Fd()); err == nil {
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
	g.budget = gnetSendBudget
	newBytes := gc.InboundBuffered() > g.lastInbound
	defer func() { g.lastInbound = gc.InboundBuffered() }()
	for {
		c.beginDrain()
		if reason := g.readFrames(); reason != "" {
			s.core.log.Warn("netio: closing connection", "remote", c.RemoteAddr, "reason", reason)
			return gnet.Close
		}
		switch res, reason, err := c.drain(g); res {
		case drainClose:
			s.core.log.Info("netio: closing connection", "remote", c.RemoteAddr, "reason", reason)
			// FIN right behind the last response, before close may reset a connection with unread input.
			_ = unix.Shutdown(gc.Fd(), unix.SHUT_WR)
			return gnet.Close
		case drainFailed:
			s.core.logWriteFailure(c, err)
			return gnet.Close
		case drainClosed:
			return gnet.Close
		}
		// Draining may have made room for frames that are already buffered.
		if !g.paused || gc.InboundBuffered() == 0 || !c.hasRoom() {
			g.updateReading(newBytes)
			return gnet.None
		}
	}
}

func (s *gnetServer) OnClose(gc gnet.Conn, _ error) gnet.Action {
	g, _ := gc.Context().(*gnetConn)
	if g == nil {
		return gnet.None
	}
	g.closed = true
	s.waiter.forget(g)
	if g.frame != nil {
		putFrame(g.frame)
		g.frame = nil
	}
	g.conn.sweep()
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
			g.frame, g.got, g.hdrGot = getFrame(int(size)), 0, 0
		}
		n, _ := gc.Read((*g.frame)[g.got:])
		if g.got += n; g.got < len(*g.frame) {
			return ""
		}
		buf := g.frame
		g.frame = nil
		c.dispatch(buf)
	}
	return ""
}

func (g *gnetConn) wake() {
	s := g.srv
	s.wakeMu.RLock()
	if !s.stopping {
		_ = g.gc.Wake(nil)
	}
	s.wakeMu.RUnlock()
}

func (g *gnetConn) close() {
	s := g.srv
	s.wakeMu.RLock()
	if !s.stopping {
		_ = g.gc.Close()
	}
	s.wakeMu.RUnlock()
}

// pausesReads reports whether reads can pause at MaxInFlight (the loop's epoll set was found).
func (g *gnetConn) pausesReads() bool { return g.loopEpfd >= 0 }

// resumeReader has nothing to do: the reader runs on the loop right after each drain.
func (g *gnetConn) resumeReader() {}

// writeBytes hands the bytes to gnet, which writes what the socket takes and buffers the rest in order.
func (g *gnetConn) writeBytes(iov [][]byte) error {
	var err error
	if len(iov) == 1 {
		_, err = g.gc.Write(iov[0])
	} else {
		_, err = g.gc.Writev(iov)
	}
	if err == nil && g.closed {
		err = errConnClosed
	}
	return err
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
