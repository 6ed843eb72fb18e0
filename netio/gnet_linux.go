package netio

import (
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// gnet has no sendfile, so file ranges bypass it: once gnet's outbound buffer is empty, sendfile(2)
// writes straight to the socket. When the socket is full, the connection's descriptor is armed
// (EPOLLOUT|EPOLLONESHOT) in a side epoll set whose goroutine wakes the connection's loop when it
// becomes writable.

// gnetCopyWhenFull switches what a full socket does to a file range: instead of waiting for
// writability, copy the rest into gnet's outbound buffer (pread, then Write). Off by default: it costs
// a copy and holds the range in memory per slow client; benchmarks compare the two.
var gnetCopyWhenFull bool

type writableWaiter struct {
	epfd, evfd int
	done       chan struct{}

	mu    sync.Mutex
	conns map[int32]*gnetConn // by descriptor
}

func newWritableWaiter() (*writableWaiter, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("netio: epoll_create1: %w", err)
	}
	evfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("netio: eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(evfd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &ev); err != nil {
		_ = unix.Close(epfd)
		_ = unix.Close(evfd)
		return nil, fmt.Errorf("netio: epoll_ctl: %w", err)
	}
	w := &writableWaiter{epfd: epfd, evfd: evfd, done: make(chan struct{}), conns: make(map[int32]*gnetConn)}
	go w.run()
	return w, nil
}

func (w *writableWaiter) run() {
	defer close(w.done)
	events := make([]unix.EpollEvent, 64)
	for {
		n, err := unix.EpollWait(w.epfd, events, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return
		}
		for i := range events[:n] {
			fd := events[i].Fd
			if fd == int32(w.evfd) {
				return
			}
			w.mu.Lock()
			g := w.conns[fd]
			w.mu.Unlock()
			if g != nil {
				g.wake() // stale after a close: gnet ignores Wake on closed connections
			}
		}
	}
}

// arm asks for one wake-up when g's socket is writable. Loop goroutine.
func (w *writableWaiter) arm(g *gnetConn) error {
	fd := g.gc.Fd()
	ev := unix.EpollEvent{Events: unix.EPOLLOUT | unix.EPOLLONESHOT, Fd: int32(fd)}
	if g.armed {
		return unix.EpollCtl(w.epfd, unix.EPOLL_CTL_MOD, fd, &ev)
	}
	w.mu.Lock()
	w.conns[int32(fd)] = g
	w.mu.Unlock()
	g.armed = true
	return unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, fd, &ev)
}

// forget removes g before gnet closes its descriptor. Loop goroutine.
func (w *writableWaiter) forget(g *gnetConn) {
	if !g.armed {
		return
	}
	fd := g.gc.Fd()
	_ = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	w.mu.Lock()
	if w.conns[int32(fd)] == g {
		delete(w.conns, int32(fd))
	}
	w.mu.Unlock()
	g.armed = false
}

func (w *writableWaiter) close() {
	var one = [8]byte{1}
	_, _ = unix.Write(w.evfd, one[:])
	<-w.done
	_ = unix.Close(w.epfd)
	_ = unix.Close(w.evfd)
}

// flushed pushes gnet's outbound buffer to the socket; if some stays, it waits for writability.
func (g *gnetConn) flushed() error {
	if g.gc.OutboundBuffered() == 0 {
		return nil
	}
	_ = g.gc.Flush()
	if g.closed {
		return errConnClosed
	}
	if g.gc.OutboundBuffered() == 0 {
		return nil
	}
	if err := g.srv.waiter.arm(g); err != nil {
		return err
	}
	return errWouldBlock
}

// sendFile sends with sendfile(2) after everything before it left gnet's buffer, within the turn's
// budget; the explicit offset leaves the file's shared offset alone.
func (g *gnetConn) sendFile(f *os.File, off, n int64) (int64, error) {
	if err := g.flushed(); err != nil {
		return 0, err
	}
	out, in := g.gc.Fd(), int(f.Fd())
	g.sfOff = off
	end := off + n
	for g.sfOff < end {
		if g.budget <= 0 {
			g.wake() // yield the loop; continue next turn
			return g.sfOff - off, errWouldBlock
		}
		m, err := unix.Sendfile(out, in, &g.sfOff, int(min(end-g.sfOff, g.budget)))
		g.budget -= int64(max(m, 0))
		switch {
		case err == unix.EAGAIN && gnetCopyWhenFull:
			k, cerr := copyFileRange(g.gc, f, g.sfOff, end-g.sfOff)
			return g.sfOff - off + k, cerr
		case err == unix.EAGAIN:
			sendfileWouldBlock.Add(1)
			if aerr := g.srv.waiter.arm(g); aerr != nil {
				return g.sfOff - off, aerr
			}
			return g.sfOff - off, errWouldBlock
		case err == unix.EINTR:
		case err != nil:
			return g.sfOff - off, err
		case m == 0:
			return g.sfOff - off, io.ErrUnexpectedEOF // the file is shorter than the range
		}
	}
	return n, nil
}
