//go:build darwin || dragonfly || freebsd || netbsd || openbsd

package netio

import (
	"os"

	"github.com/panjf2000/gnet/v2"
)

// Off Linux the gnet backend copies file ranges once through gnet's outbound buffer (pread, then
// Write); there is no side poller.

type writableWaiter struct{}

func newWritableWaiter() (*writableWaiter, error) { return &writableWaiter{}, nil }
func (*writableWaiter) forget(*gnetConn)          {}
func (*writableWaiter) close()                    {}

// flushed is only needed before closing on CloseConn; without a side poller it retries on the next
// loop turn.
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
	g.wake()
	return errWouldBlock
}

func (g *gnetConn) sendFile(f *os.File, off, n int64) (int64, error) {
	return copyFileRange(g.gc, f, off, n)
}

// Without epoll there is no read pause: at MaxInFlight frames wait unparsed in gnet's inbound buffer.
func loopEpollFd(gnet.Conn) (int, bool) { return -1, false }
func (*gnetConn) updateReading(bool)    {}
