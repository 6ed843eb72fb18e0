//go:build darwin || dragonfly || freebsd || netbsd || openbsd

package netio

import "os"

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
