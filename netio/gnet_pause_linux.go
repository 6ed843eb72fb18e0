package netio

import (
	"reflect"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"
)

// Read back-pressure for gnet. gnet reads every readable socket and has no API to stop, so at
// MaxInFlight the connection's descriptor is modified in its loop's epoll set to leave out EPOLLIN:
// the socket buffer fills and TCP pushes back on the client.
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

// setReading turns EPOLLIN for g's socket on or off in its loop's epoll set. Loop goroutine. gnet
// itself only changes the registration when it flushes its own outbound buffer, which netio never
// fills.
func (g *gnetConn) setReading(on bool) {
	if g.loopEpfd < 0 {
		return
	}
	var events uint32
	if on {
		events = epollReadEvents
	}
	ev := unix.EpollEvent{Events: events, Fd: int32(g.fd)}
	if err := unix.EpollCtl(g.loopEpfd, unix.EPOLL_CTL_MOD, g.fd, &ev); err != nil {
		return
	}
	g.readOff = !on
}
