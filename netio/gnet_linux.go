package netio

import (
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// When a gnet connection's socket is full, its descriptor is armed (EPOLLOUT|EPOLLONESHOT) in a side
// epoll set; the waiter goroutine resumes the connection's drain when the socket becomes writable.

type writableWaiter struct {
	epfd, evfd int
	done       chan struct{}

	mu    sync.Mutex
	conns map[int32]*gnetConn // by descriptor
}

// writableState is a connection's registration with the waiter. Guarded by the connection's fdMu.
type writableState struct {
	registered bool
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
			// tryResume fails for a connection that was closed (and swept) meanwhile.
			if g != nil && g.conn.tryResume() {
				g.runDrain()
			}
		}
	}
}

// arm asks for one resume when g's socket is writable. Called with g.fdMu held.
func (w *writableWaiter) arm(g *gnetConn) {
	ev := unix.EpollEvent{Events: unix.EPOLLOUT | unix.EPOLLONESHOT, Fd: int32(g.fd)}
	op := unix.EPOLL_CTL_MOD
	if !g.wait.registered {
		w.mu.Lock()
		w.conns[int32(g.fd)] = g
		w.mu.Unlock()
		g.wait.registered = true
		op = unix.EPOLL_CTL_ADD
	}
	if err := unix.EpollCtl(w.epfd, op, g.fd, &ev); err != nil {
		// Cannot wait: let gnet close it (OnClose sweeps).
		g.srv.core.log.Warn("netio: closing connection", "remote", g.conn.RemoteAddr, "reason", "epoll_ctl failed", "err", err)
		g.close()
	}
}

// forget removes g before gnet closes its descriptor. Called with g.fdMu held.
func (w *writableWaiter) forget(g *gnetConn) {
	if !g.wait.registered {
		return
	}
	_ = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, g.fd, nil)
	w.mu.Lock()
	if w.conns[int32(g.fd)] == g {
		delete(w.conns, int32(g.fd))
	}
	w.mu.Unlock()
	g.wait.registered = false
}

func (w *writableWaiter) close() {
	var one = [8]byte{1}
	_, _ = unix.Write(w.evfd, one[:])
	<-w.done
	_ = unix.Close(w.epfd)
	_ = unix.Close(w.evfd)
}

// sendFile sends with sendfile(2), straight from the page cache to the socket, until the socket is
// full or the budget is spent; the explicit offset leaves the file's shared offset alone.
func (g *gnetConn) sendFile(f *os.File, off, n int64) (int64, error) {
	g.fdMu.Lock()
	defer g.fdMu.Unlock()
	if g.fdClosed {
		return 0, errConnClosed
	}
	in := int(f.Fd())
	g.sfOff = off
	end := off + n
	for g.sfOff < end {
		if g.budget <= 0 {
			return g.sfOff - off, errWouldBlock
		}
		m, err := unix.Sendfile(g.fd, in, &g.sfOff, int(min(end-g.sfOff, g.budget)))
		g.budget -= int64(max(m, 0))
		switch {
		case err == unix.EAGAIN:
			sendfileWouldBlock.Add(1)
			return g.sfOff - off, errWouldBlock
		case err == unix.EINTR:
		case err != nil:
			return g.sfOff - off, os.NewSyscallError("sendfile", err)
		case m == 0:
			return g.sfOff - off, io.ErrUnexpectedEOF // the file is shorter than the range
		}
	}
	return n, nil
}
