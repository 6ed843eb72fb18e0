package netio

import (
	"reflect"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"
)

// Read back-pressure for gnet. gnet reads every readable socket and has no API to stop, so at
// MaxInFlight the connection's descriptor is modified in its loop's epoll set to leave out EPOLLIN:
// the socket buffer fills and TCP pushes back on the client. gnet itself re-enables reading when it
// finishes flushing its outbound buffer; the next OnTraffic then pauses again, so what leaks through
// is at most one read buffer per flush.
//
// The loop's epoll descriptor is not exported: it is read by reflection from gnet v2.10.0's
// conn.loop.poller.fd. If that layout ever changes, loopEpollFd says so and the backend falls back
// to leaving unparsed bytes in gnet's inbound buffer.

const epollReadEvents = unix.EPOLLIN | unix.EPOLLPRI

// loopEpollFd returns the epoll descriptor of gc's event loop.
func loopEpollFd(gc gnet.Conn) (int, bool) {
	v := reflect.ValueOf(gc)
	for _, name := range []string{"loop", "poller"} {
		if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
			return -1, false
		}
		v = v.Elem().FieldByName(name)
	}
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return -1, false
	}
	fd := v.Elem().FieldByName("fd")
	if fd.Kind() != reflect.Int || fd.Int() <= 0 {
		return -1, false
	}
	return int(fd.Int()), true
}

// updateReading pauses reading at MaxInFlight (or once a CloseConn is pending) and resumes it when
// at most half as many requests are outstanding, so a client that keeps the limit busy costs one
// epoll_ctl per burst rather than per request. newBytes says that this OnTraffic found bytes that
// arrived since the last one: if reading was off, gnet turned it back on. Loop goroutine, at the end
// of OnTraffic, the only place where requests retire.
func (g *gnetConn) updateReading(newBytes bool) {
	if g.loopEpfd < 0 || g.closed {
		return
	}
	c := g.conn
	c.mu.Lock()
	inFlight, full := c.tail-c.head, c.tail-c.head >= c.max || c.closing
	c.mu.Unlock()
	switch {
	case full || (g.readOff && newBytes && inFlight > c.max/2):
		if !g.readOff || newBytes {
			g.setReading(false)
		}
	case g.readOff && inFlight <= c.max/2:
		g.setReading(true)
	}
}

// setReading turns EPOLLIN for g's socket on or off in its loop's epoll set.
func (g *gnetConn) setReading(on bool) {
	var events uint32
	if on {
		events = epollReadEvents
	}
	if g.gc.OutboundBuffered() > 0 {
		events |= unix.EPOLLOUT // gnet is waiting to flush; keep that
	}
	fd := g.gc.Fd()
	ev := unix.EpollEvent{Events: events, Fd: int32(fd)}
	if err := unix.EpollCtl(g.loopEpfd, unix.EPOLL_CTL_MOD, fd, &ev); err != nil {
		return
	}
	g.readOff = !on
}
