package netio

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/sluicebroker/sluice/internal/acceptretry"
	"github.com/sluicebroker/sluice/internal/uring"
	"golang.org/x/sys/unix"
)

// The io_uring backend: Options.Loops event loops, each a goroutine that owns one ring; every loop keeps
// an ACCEPT posted on the one listening socket (multishot where the kernel has it, 5.19), and a
// connection stays on the loop that accepted it. Receives take their buffer from the loop's provided
// buffer ring (5.19) when the kernel has one, so an idle connection holds no read buffer; a frame body
// longer than such a buffer is received straight into the frame.
// Accepts, receives and byte writes (SENDMSG with the response's buffers as iovecs) go through the ring;
// completions are handled on the loop, which also parses frames, calls HandleRequest and drains the
// response queue. Answers from other goroutines wake the loop through an eventfd whose READ is always
// posted on the ring. File ranges are sent with sendfile(2) from the loop on the non-blocking socket;
// when it is full, a POLL_ADD(POLLOUT) on the ring resumes the drain.
//
// A drain that posted a write stops (drainBlocked) and resumes when the write completes; the result is
// consumed by the next writeBytes. Every connection has at most one receive and one write-side operation
// (SENDMSG, POLL_ADD or a yielding NOP) in flight; it is closed with shutdown(2), which completes both,
// and its descriptor is closed and its queue swept only once both are done, so the kernel never touches
// buffers that were handed back.

const (
	uringEntries    = 4096
	uringCQEntries  = 16384
	uringReadBuffer = 16 << 10
	uringSendBudget = 4 << 20 // bytes one drain writes before yielding to other connections
	uringBacklog    = 4096
)

// uringBufCount is the number of provided buffers per loop, uringReadBuffer bytes each (4 MiB); a
// receive that finds none waits for the batch's buffers to come back. Tests lower it.
var uringBufCount = 256

// User data: connection key << udShift | kind. Key 0 is the server's own operations.
const (
	udAccept uint64 = iota
	udWake
	udTimer
	udCancel
	udRecv
	udWrite
	udShift = 3
)

// Write-side operation kinds.
const (
	wopSend uint8 = iota
	wopPoll
	wopYield
)

// Flags a goroutine leaves for the loop.
const (
	wantDrain uint8 = 1 << iota
	wantRead
	wantClose
)

// uringSetup creates the loop's ring; tests replace it to simulate a kernel without io_uring.
var uringSetup = func() (*uring.Ring, error) {
	r, err := uring.NewFlags(uringEntries, uringCQEntries, uring.SetupCoopTaskrun)
	if err != nil { // a kernel before 5.19
		r, err = uring.New(uringEntries, uringCQEntries)
	}
	if err != nil {
		return nil, err
	}
	if err := r.Supports(uringOps...); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// uringOps are the opcodes the backend posts.
var uringOps = []uint8{uring.OpNop, uring.OpAccept, uring.OpRecv, uring.OpSendmsg, uring.OpPollAdd,
	uring.OpRead, uring.OpAsyncCancel, uring.OpTimeout}

// uringStarved counts receives that found no provided buffer; tests log it.
var uringStarved atomic.Uint64

type uringServer struct {
	core *core
	ring *uring.Ring
	// bufs is the provided buffer ring receives draw from; nil where the kernel has none (each
	// connection then owns a read buffer).
	bufs        *uring.BufRing
	multiAccept bool
	starved     []*uringConn // receives that found bufs empty (ENOBUFS): posted again after the batch
	lfd         int
	evfd        int
	addr        net.Addr
	done        chan struct{}

	// Loop only.
	conns        map[uint64]*uringConn
	evbuf        [8]byte
	evPosted     bool
	acceptSA     unix.RawSockaddrAny
	acceptLen    uint32
	acceptPosted bool
	timerTS      unix.Timespec
	timerPosted  bool
	cancels      int
	shutdown     bool // stopping: no new connections, every connection closing
	batch        []*uringConn

	mu       sync.Mutex
	wakeList []*uringConn
	kicked   bool // the eventfd was written since the loop took the list
	stopping bool
	exited   bool // the loop no longer reads the eventfd

	closeOnce sync.Once
}

type uringConn struct {
	srv  *uringServer
	conn *Conn
	fd   int
	key  uint64

	// Reader state. in[rstart:rend] is received and not parsed: in is rbuf, or with provided buffers
	// the kernel's buffer during a completion and rbuf only while a paused connection keeps what it
	// could not parse yet. A frame's body longer than a read buffer is received straight into the frame.
	rbuf          *[]byte
	in            []byte
	rstart, rend  int
	hdr           [4]byte
	hdrGot        int
	frame         *[]byte
	size, got     int
	recvPosted    bool
	recvIntoFrame bool

	// Writer state (the drainer is always the loop).
	wPosted bool
	wKind   uint8
	wHave   bool // a SENDMSG completed: wRes is for the next writeBytes
	wRes    int32
	vecs    []unix.Iovec
	msg     unix.Msghdr
	budget  int64
	sfOff   int64

	closing   bool
	finalized bool

	pending uint8 // guarded by srv.mu
	queued  bool  // guarded by srv.mu
	todo    uint8 // loop
}

func listenUring(addr string, co *core) (backendServer, net.Addr, error) {
	// Options.Loops loops, each with its own ring, all accepting on one listening socket.
	if err := uringProbeSetup(); err != nil {
		return nil, nil, err
	}
	lfd, bound, err := uringListenSocket(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("netio: listen %s: %w", addr, err)
	}
	l := &uringLoops{lfd: lfd}
	for i := 0; i < co.opts.Loops; i++ {
		s, err := listenUringLoop(lfd, bound, co)
		if err != nil {
			_ = l.close()
			return nil, nil, err
		}
		l.loops = append(l.loops, s)
	}
	return l, bound, nil
}

// uringLoops is the server: its loops and their shared listening socket.
type uringLoops struct {
	lfd   int
	loops []*uringServer
	once  sync.Once
}

func (l *uringLoops) close() error {
	l.once.Do(func() {
		for _, s := range l.loops {
			_ = s.close()
		}
		_ = unix.Close(l.lfd)
	})
	return nil
}

// uringProbeSetup sets up one ring and closes it, so a kernel without io_uring fails before the port
// is bound.
func uringProbeSetup() error {
	ring, err := uringSetup()
	if err != nil {
		return fmt.Errorf("netio: backend uring: %w (see /proc/sys/kernel/io_uring_disabled)", err)
	}
	ring.Close()
	return nil
}

func listenUringLoop(lfd int, bound net.Addr, co *core) (*uringServer, error) {
	ring, err := uringSetup()
	if err != nil {
		return nil, fmt.Errorf("netio: backend uring: %w (see /proc/sys/kernel/io_uring_disabled)", err)
	}
	evfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		ring.Close()
		return nil, fmt.Errorf("netio: eventfd: %w", err)
	}
	s := &uringServer{
		core: co, ring: ring, lfd: lfd, evfd: evfd, addr: bound,
		done: make(chan struct{}), conns: make(map[uint64]*uringConn), multiAccept: true,
	}
	if br, err := ring.RegisterBufRing(uringBufCount, uringReadBuffer, 0); err == nil {
		s.bufs = br
	} else {
		co.log.Debug("netio: io_uring without provided buffers: a read buffer per connection", "err", err)
	}
	s.postAccept()
	s.postWakeRead()
	go s.run()
	return s, nil
}

// uringListenSocket binds a non-blocking listening socket: IPv4 for an IPv4 host, dual-stack IPv6 for
// no host.
func uringListenSocket(addr string) (int, net.Addr, error) {
	ta, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return -1, nil, err
	}
	var (
		family = unix.AF_INET6
		sa     unix.Sockaddr
	)
	switch ip4 := ta.IP.To4(); {
	case ta.IP != nil && ip4 != nil:
		family = unix.AF_INET
		a := &unix.SockaddrInet4{Port: ta.Port}
		copy(a.Addr[:], ip4)
		sa = a
	default:
		a := &unix.SockaddrInet6{Port: ta.Port}
		copy(a.Addr[:], ta.IP.To16()) // all zero for no host
		if ta.Zone != "" {
			if ifi, err := net.InterfaceByName(ta.Zone); err == nil {
				a.ZoneId = uint32(ifi.Index)
			}
		}
		sa = a
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil && family == unix.AF_INET6 && ta.IP == nil {
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Port: ta.Port} // no IPv6 here
		fd, err = unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	}
	if err != nil {
		return -1, nil, os.NewSyscallError("socket", err)
	}
	fail := func(op string, err error) (int, net.Addr, error) {
		_ = unix.Close(fd)
		return -1, nil, os.NewSyscallError(op, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fail("setsockopt", err)
	}
	if family == unix.AF_INET6 && ta.IP == nil {
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0)
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fail("bind", err)
	}
	if err := unix.Listen(fd, uringBacklog); err != nil {
		return fail("listen", err)
	}
	lsa, err := unix.Getsockname(fd)
	if err != nil {
		return fail("getsockname", err)
	}
	return fd, sockaddrToTCP(lsa), nil
}

func (s *uringServer) close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.stopping = true
		s.mu.Unlock()
		s.kick()
		<-s.done
	})
	return nil
}

// kick writes the eventfd: the loop's posted READ completes.
func (s *uringServer) kick() {
	one := [8]byte{1}
	for {
		if _, err := unix.Write(s.evfd, one[:]); err != unix.EINTR {
			return
		}
	}
}

// want leaves flags for the loop about u and wakes the loop. Any goroutine.
func (s *uringServer) want(u *uringConn, flags uint8) {
	s.mu.Lock()
	if s.exited {
		s.mu.Unlock()
		return
	}
	u.pending |= flags
	if !u.queued {
		u.queued = true
		s.wakeList = append(s.wakeList, u)
	}
	kick := !s.kicked
	s.kicked = true
	s.mu.Unlock()
	if kick {
		s.kick()
	}
}

// sqe returns a free submission entry, submitting the queue when it is full.
func (s *uringServer) sqe() *uring.SQE {
	for {
		if e := s.ring.GetSQE(); e != nil {
			return e
		}
		if _, err := s.ring.Submit(0); err != nil {
			s.core.log.Error("netio: io_uring submit", "err", err)
		}
	}
}

func (s *uringServer) postAccept() {
	if s.multiAccept {
		s.sqe().PrepAcceptMultishot(s.lfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, udAccept)
	} else {
		s.acceptLen = uint32(unix.SizeofSockaddrAny)
		s.sqe().PrepAccept(s.lfd, &s.acceptSA, &s.acceptLen, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, udAccept)
	}
	s.acceptPosted = true
}

func (s *uringServer) postWakeRead() {
	s.sqe().PrepRead(s.evfd, s.evbuf[:], 0, udWake)
	s.evPosted = true
}

func (s *uringServer) postCancel(target uint64) {
	s.sqe().PrepCancel(target, udCancel)
	s.cancels++
}

func (s *uringServer) run() {
	defer close(s.done)
	for {
		s.takeWakes()
		if s.shutdown && len(s.conns) == 0 && !s.acceptPosted && !s.timerPosted {
			s.mu.Lock()
			exited := s.exited
			s.exited = true
			s.mu.Unlock()
			if !exited && s.evPosted {
				s.postCancel(udWake)
			}
			if !s.evPosted && s.cancels == 0 {
				break
			}
		}
		if _, err := s.ring.Submit(1); err != nil {
			s.core.log.Error("netio: io_uring enter", "err", err)
			time.Sleep(10 * time.Millisecond)
		}
		for {
			cqe := s.ring.PeekCQE()
			if cqe == nil {
				break
			}
			ud, res, flags := cqe.UserData, cqe.Res, cqe.Flags
			s.ring.Seen()
			s.complete(ud, res, flags)
		}
		if s.bufs != nil {
			s.bufs.Publish() // the buffers this batch returned
			for i, u := range s.starved {
				s.starved[i] = nil
				if !u.closing && !u.recvPosted {
					u.readMore()
				}
			}
			s.starved = s.starved[:0]
		}
	}
	s.ring.Close()
	if s.bufs != nil {
		s.bufs.Close() // after the ring: the kernel no longer writes into the buffers
	}
	_ = unix.Close(s.evfd)
}

// takeWakes handles what other goroutines asked for since the last turn.
func (s *uringServer) takeWakes() {
	s.mu.Lock()
	s.batch, s.wakeList = s.wakeList, s.batch[:0]
	for _, u := range s.batch {
		u.todo, u.pending, u.queued = u.pending, 0, false
	}
	s.kicked = false
	stopping := s.stopping
	s.mu.Unlock()
	for i, u := range s.batch {
		s.batch[i] = nil
		if u.finalized {
			continue
		}
		todo := u.todo
		u.todo = 0
		if todo&wantClose != 0 {
			u.startClose()
			continue
		}
		if todo&wantRead != 0 {
			u.readMore()
		}
		if todo&wantDrain != 0 && !u.closing && u.conn.tryDrain() {
			u.runDrain()
		}
	}
	if stopping && !s.shutdown {
		s.shutdown = true
		if s.acceptPosted {
			s.postCancel(udAccept)
		}
		if s.timerPosted {
			s.postCancel(udTimer)
		}
		for _, u := range s.conns {
			u.startClose()
		}
	}
}

func (s *uringServer) complete(ud uint64, res int32, flags uint32) {
	kind, key := ud&(1<<udShift-1), ud>>udShift
	if key == 0 {
		switch kind {
		case udWake:
			s.evPosted = false
			s.mu.Lock()
			exited := s.exited
			s.mu.Unlock()
			if !exited {
				s.postWakeRead()
			}
		case udAccept:
			if flags&uring.CQEMore == 0 {
				s.acceptPosted = false // a single-shot accept, or a multishot one that ended
			}
			s.accepted(res)
		case udTimer:
			s.timerPosted = false
			if !s.shutdown {
				s.postAccept()
			}
		case udCancel:
			s.cancels--
		}
		return
	}
	u := s.conns[key]
	if u == nil {
		if flags&uring.CQEBuffer != 0 {
			s.bufs.Return(uint16(flags >> 16))
		}
		return
	}
	switch kind {
	case udRecv:
		u.received(res, flags)
	case udWrite:
		u.written(res)
	}
}

func (s *uringServer) accepted(res int32) {
	if res < 0 {
		if s.shutdown || s.acceptPosted { // stopping, or a multishot accept that stays armed
			return
		}
		switch errno := unix.Errno(-res); errno {
		case unix.EINVAL:
			if s.multiAccept { // a kernel before 5.19: one ACCEPT per connection
				s.multiAccept = false
				s.postAccept()
				return
			}
			fallthrough
		case unix.ECONNABORTED, unix.EINTR, unix.EAGAIN, unix.EPROTO, unix.EPERM:
			s.core.log.Debug("netio: accept", "err", errno)
			s.postAccept()
		default:
			// Out of descriptors or memory, or worse: back off instead of spinning. (A multishot
			// accept ends on such an error; the timer posts a new one.)
			s.core.acceptFailed.Failed(s.core.log, acceptFailedMsg, errno)
			s.timerTS = unix.NsecToTimespec(int64(acceptretry.Backoff))
			s.sqe().PrepTimeout(&s.timerTS, udTimer)
			s.timerPosted = true
		}
		return
	}
	fd := int(res)
	if s.shutdown {
		_ = unix.Close(fd)
		return
	}
	if !s.acceptPosted {
		s.postAccept()
	}
	psa, err := unix.Getpeername(fd)
	if err != nil { // already gone
		_ = unix.Close(fd)
		return
	}
	var local net.Addr = s.addr
	if lsa, err := unix.Getsockname(fd); err == nil {
		local = sockaddrToTCP(lsa)
	}
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	// As Go's net does: find clients that vanished.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 15)
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 15)
	u := &uringConn{srv: s, fd: fd}
	if s.bufs == nil {
		u.rbuf = getFrame(uringReadBuffer)
		u.in = *u.rbuf
	}
	u.conn = newConn(s.core, u, sockaddrToTCP(psa), local)
	u.key = u.conn.ID
	s.conns[u.key] = u
	u.postRecv()
}

// connIO: any goroutine.

func (u *uringConn) wake()         { u.srv.want(u, wantDrain) }
func (u *uringConn) resumeReader() { u.srv.want(u, wantRead) }
func (u *uringConn) close()        { u.srv.want(u, wantClose) }

// Reading, on the loop.

func (u *uringConn) received(res int32, flags uint32) {
	u.recvPosted = false
	kernelBuf := flags&uring.CQEBuffer != 0
	if u.closing || res <= 0 {
		if kernelBuf {
			u.srv.bufs.Return(uint16(flags >> 16))
		}
		switch {
		case u.closing:
			u.maybeFinalize()
		case res == -int32(unix.ENOBUFS):
			uringStarved.Add(1)
			u.srv.starved = append(u.srv.starved, u) // every provided buffer is taken: try after the batch
		default:
			if res < 0 {
				u.srv.core.log.Debug("netio: recv", "remote", u.conn.RemoteAddr, "err", unix.Errno(-res))
			}
			u.startClose() // EOF or error
		}
		return
	}
	switch {
	case u.recvIntoFrame:
		u.got += int(res)
	case kernelBuf:
		id := uint16(flags >> 16)
		u.in, u.rstart, u.rend = u.srv.bufs.Buf(id)[:res], 0, int(res)
		u.readMore()
		u.keepRest()
		u.srv.bufs.Return(id)
		return
	default:
		u.rend += int(res)
	}
	u.readMore()
}

// keepRest copies what a paused connection could not parse out of the kernel's buffer, which goes
// back to the ring.
func (u *uringConn) keepRest() {
	if u.rstart == u.rend || u.closing {
		u.in, u.rstart, u.rend = nil, 0, 0
		return
	}
	u.rbuf = getFrame(uringReadBuffer)
	n := copy(*u.rbuf, u.in[u.rstart:u.rend])
	u.in, u.rstart, u.rend = *u.rbuf, 0, n
}

// readMore parses what was received, dispatching frames while there is room, drains the answers given
// meanwhile, and receives again unless paused at MaxInFlight.
func (u *uringConn) readMore() {
	c := u.conn
	for !u.closing && !u.recvPosted {
		// Own the writer while dispatching, so answers given inside HandleRequest go out together.
		owner := c.tryDrain()
		reason := u.parse()
		if owner && !u.runDrain() {
			return
		}
		if reason != "" {
			c.core.log.Warn("netio: closing connection", "remote", c.RemoteAddr, "reason", reason)
			u.startClose()
			return
		}
		if u.frame == nil {
			c.mu.Lock()
			room := c.tail-c.head < c.max && !c.closing && !c.closed
			if !room && !c.closing && !c.closed {
				c.readerWaiting = true
				c.resumeAt = c.max - 1
			}
			c.mu.Unlock()
			if !room {
				return // resumeReader brings us back
			}
			if u.rstart < u.rend {
				continue // room appeared while frames wait in rbuf
			}
		}
		u.postRecv()
	}
}

// parse moves received bytes into frames and dispatches complete ones while there is room; it returns a
// reason when the client sent garbage.
func (u *uringConn) parse() string {
	c := u.conn
	rb := u.in
	for {
		if u.frame != nil && u.got == u.size {
			buf := u.frame
			u.frame = nil
			c.dispatch(buf)
			continue
		}
		if u.rstart == u.rend {
			u.rstart, u.rend = 0, 0
			return ""
		}
		if u.frame == nil {
			if !c.hasRoom() {
				return ""
			}
			n := copy(u.hdr[u.hdrGot:], rb[u.rstart:u.rend])
			u.rstart += n
			if u.hdrGot += n; u.hdrGot < len(u.hdr) {
				continue
			}
			size := int32(binary.BigEndian.Uint32(u.hdr[:]))
			if reason := checkFrameSize(size, c.core.opts.MaxFrameBytes); reason != "" {
				return reason
			}
			u.frame, u.size, u.got, u.hdrGot = startFrame(int(size)), int(size), 0, 0
			continue
		}
		if u.got == len(*u.frame) {
			u.frame = growFrame(u.frame, u.size)
		}
		n := copy((*u.frame)[u.got:], rb[u.rstart:u.rend])
		u.got += n
		u.rstart += n
	}
}

// postRecv receives into rbuf, or straight into the frame when its rest is at least as long as rbuf.
// rbuf is empty (parse consumed it) unless paused, and then nothing is received.
func (u *uringConn) postRecv() {
	if u.srv.bufs != nil {
		u.postRecvSelect()
		return
	}
	rb := *u.rbuf
	if u.rstart > 0 {
		n := copy(rb, rb[u.rstart:u.rend])
		u.rstart, u.rend = 0, n
	}
	ud := u.key<<udShift | udRecv
	if u.frame != nil && u.rend == 0 && u.size-u.got >= len(rb) {
		if u.got == len(*u.frame) {
			u.frame = growFrame(u.frame, u.size)
		}
		u.srv.sqe().PrepRecv(u.fd, (*u.frame)[u.got:], ud)
		u.recvIntoFrame = true
	} else {
		u.srv.sqe().PrepRecv(u.fd, rb[u.rend:], ud)
		u.recvIntoFrame = false
	}
	u.recvPosted = true
}

// postRecvSelect receives into a provided buffer, or straight into the frame when its rest is at least
// as long as one. Everything received was parsed: a kept rest goes back to the pool.
func (u *uringConn) postRecvSelect() {
	if u.rbuf != nil {
		putFrame(u.rbuf)
		u.rbuf = nil
	}
	u.in, u.rstart, u.rend = nil, 0, 0
	ud := u.key<<udShift | udRecv
	if u.frame != nil && u.size-u.got >= uringReadBuffer {
		if u.got == len(*u.frame) {
			u.frame = growFrame(u.frame, u.size)
		}
		u.srv.sqe().PrepRecv(u.fd, (*u.frame)[u.got:], ud)
		u.recvIntoFrame = true
	} else {
		u.srv.sqe().PrepRecvSelect(u.fd, u.srv.bufs.Group(), ud)
		u.recvIntoFrame = false
	}
	u.recvPosted = true
}

// Writing, on the loop.

// runDrain writes what is answered and deals with the outcome. It returns false when the connection is
// closing. The caller owns the writer (wstate running).
func (u *uringConn) runDrain() bool {
	c := u.conn
	u.budget = uringSendBudget
	res, reason, err := c.drain(u)
	switch res {
	case drainIdle, drainBlocked: // blocked: a write-side operation is posted and resumes the drain
		return true
	case drainClose:
		c.core.log.Info("netio: closing connection", "remote", c.RemoteAddr, "reason", reason)
		// FIN right behind the last response, before close may reset a connection with unread input.
		_ = unix.Shutdown(u.fd, unix.SHUT_WR)
	case drainFailed:
		c.core.logWriteFailure(c, err)
	}
	c.sweep() // nothing is in flight on the write side: the last write completed
	u.startClose()
	return false
}

func (u *uringConn) written(res int32) {
	u.wPosted = false
	if u.wKind == wopSend {
		u.wHave, u.wRes = true, res
	}
	if u.closing {
		u.maybeFinalize()
		return
	}
	if u.conn.tryResume() {
		u.runDrain()
	}
}

func (u *uringConn) postWrite(kind uint8) {
	ud := u.key<<udShift | udWrite
	e := u.srv.sqe()
	switch kind {
	case wopSend:
		u.msg = unix.Msghdr{Iov: &u.vecs[0]}
		u.msg.SetIovlen(len(u.vecs))
		e.PrepSendmsg(u.fd, &u.msg, unix.MSG_NOSIGNAL, ud)
	case wopPoll:
		e.PrepPollAdd(u.fd, unix.POLLOUT, ud)
	default:
		e.PrepNop(ud)
	}
	u.wKind, u.wPosted = kind, true
}

// writeBytes consumes the result of the SENDMSG that completed, if any, and posts the next one for what
// is left: the drain stops (errWouldBlock) until it completes.
func (u *uringConn) writeBytes(iov *[][]byte) error {
	if u.wHave {
		u.wHave = false
		res := u.wRes
		if res < 0 {
			return os.NewSyscallError("sendmsg", unix.Errno(-res))
		}
		consumeIov(iov, int(res))
		u.budget -= int64(res)
		if len(*iov) == 0 {
			return nil
		}
		if res == 0 {
			return io.ErrShortWrite
		}
	}
	if u.budget <= 0 {
		u.postWrite(wopYield)
		return errWouldBlock
	}
	u.fillVecs(*iov)
	if uringSend == "direct" {
		// Try the socket first: what fits goes out now, without a round trip through the completion
		// queue; the rest goes to a SENDMSG on the ring, which waits for room.
		u.msg = unix.Msghdr{Iov: &u.vecs[0]}
		u.msg.SetIovlen(len(u.vecs))
		n, _, errno := unix.Syscall(unix.SYS_SENDMSG, uintptr(u.fd), uintptr(unsafe.Pointer(&u.msg)), unix.MSG_NOSIGNAL|unix.MSG_DONTWAIT)
		switch errno {
		case 0:
			consumeIov(iov, int(n))
			u.budget -= int64(n)
			if len(*iov) == 0 {
				return nil
			}
			u.fillVecs(*iov)
		case unix.EAGAIN, unix.EINTR:
		default:
			return os.NewSyscallError("sendmsg", errno)
		}
	}
	u.postWrite(wopSend)
	return errWouldBlock
}

// uringSend says how bytes are written: "direct" tries sendmsg(2) on the non-blocking socket first and
// posts a SENDMSG on the ring for what did not fit; "ring" always posts (the bake-off compared both:
// bench/uring-send.txt). A string, so a benchmark build can flip it with -ldflags -X.
var uringSend = "direct"

func (u *uringConn) fillVecs(iov [][]byte) {
	clear(u.vecs)
	u.vecs = u.vecs[:0]
	for _, b := range iov {
		v := unix.Iovec{Base: &b[0]}
		v.SetLen(len(b))
		u.vecs = append(u.vecs, v)
	}
}

// sendFile sends with sendfile(2) on the non-blocking socket until it is full (then a POLL_ADD resumes
// the drain) or the budget is spent; the explicit offset leaves the file's shared offset alone.
func (u *uringConn) sendFile(f *os.File, off, n int64) (int64, error) {
	in := int(f.Fd())
	u.sfOff = off
	end := off + n
	for u.sfOff < end {
		if u.budget <= 0 {
			u.postWrite(wopYield)
			return u.sfOff - off, errWouldBlock
		}
		m, err := unix.Sendfile(u.fd, in, &u.sfOff, int(min(end-u.sfOff, u.budget)))
		u.budget -= int64(max(m, 0))
		switch {
		case err == unix.EAGAIN:
			sendfileWouldBlock.Add(1)
			u.postWrite(wopPoll)
			return u.sfOff - off, errWouldBlock
		case err == unix.EINTR:
		case err != nil:
			return u.sfOff - off, os.NewSyscallError("sendfile", err)
		case m == 0:
			return u.sfOff - off, io.ErrUnexpectedEOF // the file is shorter than the range
		}
	}
	return n, nil
}

// Closing, on the loop.

// startClose shuts the socket down, which completes what is in flight; the connection is finalized
// once nothing is.
func (u *uringConn) startClose() {
	if u.closing {
		return
	}
	u.closing = true
	u.conn.markClosed()
	_ = unix.Shutdown(u.fd, unix.SHUT_RDWR)
	u.maybeFinalize()
}

func (u *uringConn) maybeFinalize() {
	if u.finalized || u.recvPosted || u.wPosted {
		return
	}
	u.finalized = true
	if u.frame != nil {
		putFrame(u.frame)
		u.frame = nil
	}
	if u.rbuf != nil {
		putFrame(u.rbuf)
		u.rbuf = nil
	}
	u.in = nil
	clear(u.vecs)
	u.conn.closeAndSweep()
	u.srv.core.handler.ConnClosed(u.conn)
	_ = unix.Close(u.fd)
	delete(u.srv.conns, u.key)
}

// UringAvailable reports why Backend uring cannot run here (disabled by sysctl, a kernel too old,
// seccomp), or nil when it can: a loop's ring is set up, probed and closed.
func UringAvailable() error { return uringProbeSetup() }
