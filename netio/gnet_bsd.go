//go:build darwin || dragonfly || freebsd || netbsd || openbsd

package netio

import (
	"os"
	"sync"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"
)

// Off Linux the gnet backend has no side epoll set: a connection whose socket is full gets a
// goroutine that polls(2) it for writability, and file ranges are copied once (pread, then write)
// instead of sent with sendfile. There is no read pause either: at MaxInFlight frames wait unparsed in
// gnet's inbound buffer. These platforms are for development.

type writableWaiter struct{ wg sync.WaitGroup }

type writableState struct{}

func newWritableWaiter() (*writableWaiter, error) { return &writableWaiter{}, nil }
func (*writableWaiter) forget(*gnetConn)          {}
func (w *writableWaiter) close()                  { w.wg.Wait() }

// arm starts a goroutine that resumes g's drain once its socket is writable. Called with g.fdMu held.
func (w *writableWaiter) arm(g *gnetConn) {
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for {
			g.fdMu.Lock()
			closed, fd := g.fdClosed, g.fd
			g.fdMu.Unlock()
			if closed {
				// OnClose swept the connection (the drain was blocked, so nobody else owned it).
				return
			}
			// A bounded wait, so a descriptor closed meanwhile is noticed.
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
			if n, _ := unix.Poll(fds, 100); n > 0 {
				break
			}
		}
		if g.conn.tryResume() {
			g.runDrain()
		}
	}()
}

func (g *gnetConn) sendFile(f *os.File, off, n int64) (int64, error) {
	return copyFileRange(gnetFdWriter{g}, f, off, n)
}

// gnetFdWriter writes to the socket through writeBytes, so the copy path shares its blocking rules.
type gnetFdWriter struct{ g *gnetConn }

func (w gnetFdWriter) Write(p []byte) (int, error) {
	iov := [][]byte{p}
	err := w.g.writeBytes(&iov)
	written := len(p)
	if len(iov) > 0 {
		written -= len(iov[0])
	}
	return written, err
}

func loopEpollFd(gnet.Conn) (int, bool) { return -1, false }
func (*gnetConn) setReading(bool)       {}
