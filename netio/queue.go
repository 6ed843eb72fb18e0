package netio

import (
	"errors"
	"math/bits"
	"net"
	"os"
	"sync"
)

// Conn is one client connection.
type Conn struct {
	ID         uint64 // unique per Server
	RemoteAddr net.Addr
	LocalAddr  net.Addr

	io   connIO
	core *core
	sec  connSecurity // TLS peer and the handler's per-connection value (tls.go)

	mu sync.Mutex
	// ring holds the requests in flight, indexed by sequence number & mask. Entries are allocated on first
	// use and never replaced, so a reader of ring[seq&mask] for seq < tail needs no lock.
	ring []*Request
	mask uint64
	max  uint64
	// head is the oldest request whose response is not yet written; tail is the next sequence number.
	head, tail uint64
	// wstate says who may drain: nobody (idle: the next answer of the head request wakes the
	// writer), the woken writer once it runs (woken), one goroutine now (running), or whoever
	// resumes the drain when the full socket turns writable (blocked). Only the goroutine that moved
	// wstate to running drains.
	wstate uint8
	// readerWaiting: the reader paused at MaxInFlight and wants resumeReader once at most resumeAt
	// requests are in flight.
	readerWaiting bool
	resumeAt      uint64
	closing       bool // a CloseConn was answered: read no further requests
	closed        bool // the connection is gone: answers only release
	sweepDone     bool // sweep ran

	// Drain state, touched only by the goroutine that drains.
	wNext uint64   // when blocked: requests [head, wNext) are gathered in iov or skipped
	wPart int      // next part of the response at wNext
	wOff  int64    // bytes of that part (a file range) already sent
	iov   [][]byte // byte parts gathered for one writev, not yet written
	swept []*Request
}

const (
	writerIdle uint8 = iota
	writerWoken
	writerRunning
	writerBlocked
)

// connIO is what the shared queue needs from a backend's connection.
type connIO interface {
	// wake gets the backend's writer to drain soon (the caller moved wstate to woken).
	wake()
	// resumeReader wakes a reader that waits for room (readerWaiting).
	resumeReader()
	// close closes the connection now, from any goroutine.
	close()
}

// sink writes to one connection's socket, on the draining goroutine.
type sink interface {
	// writeBytes writes *iov and leaves in it what is not written yet (nothing on success).
	// errWouldBlock: the socket is full (or this turn's budget is spent); drain again once writable.
	writeBytes(iov *[][]byte) error
	// sendFile sends up to n bytes of f from off and returns how many it sent; errWouldBlock as above.
	sendFile(f *os.File, off, n int64) (int64, error)
}

var (
	errWouldBlock = errors.New("netio: would block")
	errConnClosed = errors.New("netio: connection closed")
)

// Close closes the connection now, without waiting for pending responses. Any goroutine.
func (c *Conn) Close() { c.io.close() }

// Request is one frame handed to the Handler.
type Request struct {
	// Frame is the body of the frame, without the size prefix. Valid until the response is written.
	Frame []byte
	Conn  *Conn

	seq    uint64
	buf    *[]byte // pooled backing array of Frame
	state  uint8
	resp   *Response
	reason string
}

// Request states. A request is pending from dispatch until answered, then ready/skip/close until the
// writer retires it (free again) or the connection closes (done).
const (
	stateFree uint8 = iota
	statePending
	stateReady
	stateSkip
	stateClose
	stateSwept // answered, collected by sweep, OnDone not yet run
	stateDone  // finished on a closed connection; never reused
)

// Response is the answer to one request.
type Response struct {
	// Parts are written in order as one byte stream; the handler includes the 4-byte size prefix.
	Parts []Part
	// OnDone runs once after the response is written or the connection died. May be nil. It runs
	// on the connection's writer (an event loop, the side poller or the std writer goroutine) or,
	// for a connection already closed, inside Respond: keep it short and never block in it.
	OnDone func()
}

// Part is either Bytes (non-nil) or a file range File[Off, Off+Len). File ranges are sent with
// sendfile on Linux using an explicit offset, so the file's shared offset never moves and other
// goroutines may use the same *os.File concurrently. The file must stay open until OnDone.
type Part struct {
	Bytes []byte
	File  *os.File
	Off   int64
	Len   int64
}

// Respond queues the response. Any goroutine, exactly once per request (together with Skip and
// CloseConn). Responses are written in request order whatever order Respond is called in.
func (r *Request) Respond(resp *Response) { r.Conn.answer(r, stateReady, resp, "") }

// Skip marks the request as needing no response (produce with acks=0); later responses keep waiting
// for their turn.
func (r *Request) Skip() { r.Conn.answer(r, stateSkip, nil, "") }

// CloseConn closes the connection once the responses to the requests before this one are written,
// logging reason. Requests after it are not read.
func (r *Request) CloseConn(reason string) { r.Conn.answer(r, stateClose, nil, reason) }

func newConn(co *core, io connIO, remote, local net.Addr) *Conn {
	max := uint64(co.opts.MaxInFlight)
	size := uint64(1) << bits.Len64(max-1)
	co.open.Add(1)
	return &Conn{
		ID:         co.nextID.Add(1),
		RemoteAddr: remote,
		LocalAddr:  local,
		io:         io,
		core:       co,
		ring:       make([]*Request, size),
		mask:       size - 1,
		max:        max,
	}
}

// hasRoom reports whether another request may be dispatched now.
func (c *Conn) hasRoom() bool {
	c.mu.Lock()
	ok := c.tail-c.head < c.max && !c.closing && !c.closed
	c.mu.Unlock()
	return ok
}

// dispatch hands the frame in buf (pooled) to the handler. The caller checked hasRoom; only the reader
// calls dispatch, and room only grows in between.
func (c *Conn) dispatch(buf *[]byte) {
	c.mu.Lock()
	seq := c.tail
	r := c.ring[seq&c.mask]
	if r == nil {
		r = &Request{Conn: c}
		c.ring[seq&c.mask] = r
	}
	r.seq = seq
	r.buf = buf
	r.Frame = *buf
	r.state = statePending
	c.tail++
	c.mu.Unlock()
	c.core.handler.HandleRequest(r)
}

func (c *Conn) answer(r *Request, st uint8, resp *Response, reason string) {
	c.mu.Lock()
	if r.state != statePending {
		c.mu.Unlock()
		panic("netio: request answered twice")
	}
	if c.closed {
		r.state = stateDone
		c.mu.Unlock()
		finish(r, resp)
		return
	}
	r.state, r.resp, r.reason = st, resp, reason
	if st == stateClose {
		c.closing = true
	}
	wake := r.seq == c.head && c.wstate == writerIdle
	if wake {
		c.wstate = writerWoken
	}
	c.mu.Unlock()
	if wake {
		c.io.wake()
	}
}

// finish releases what an answered request holds: its frame buffer, then the response's OnDone.
func finish(r *Request, resp *Response) {
	if r.buf != nil {
		putFrame(r.buf)
		r.buf = nil
	}
	r.Frame = nil
	r.resp = nil
	r.reason = ""
	if resp != nil && resp.OnDone != nil {
		resp.OnDone()
	}
}

// tryDrain makes the caller the drainer if nobody drains and the socket is not known to be full.
func (c *Conn) tryDrain() bool {
	c.mu.Lock()
	ok := (c.wstate == writerIdle || c.wstate == writerWoken) && !c.closed
	if ok {
		c.wstate = writerRunning
	}
	c.mu.Unlock()
	return ok
}

// tryResume makes the caller the drainer of a connection that waited for writability.
func (c *Conn) tryResume() bool {
	c.mu.Lock()
	ok := c.wstate == writerBlocked
	if ok {
		c.wstate = writerRunning
	}
	c.mu.Unlock()
	return ok
}

// drainResult says why drain stopped.
type drainResult uint8

const (
	drainIdle    drainResult = iota // everything answered is written; wstate is idle
	drainBlocked                    // the socket is full; wstate is blocked: arrange a resume
	drainClose                      // a CloseConn was reached after the responses before it were written
	drainClosed                     // the connection is closed (and swept)
	drainFailed                     // writing failed; err says why
)

// maxIov bounds one writev (Linux allows 1024 iovecs).
const maxIov = 512

// drain writes answered responses in request order through s, as far as answers and the socket allow.
// Consecutive byte parts, across responses, go out in one writev. One goroutine at a time drains a
// connection: the one that moved wstate to running (gnet) or the writer goroutine (std). After
// drainClose and drainFailed the caller closes the connection and sweeps.
func (c *Conn) drain(s sink) (drainResult, string, error) {
	next := max(c.head, c.wNext) // [head, next) are skipped or gathered into c.iov
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			c.sweep()
			return drainClosed, "", nil
		}
		if next == c.tail || c.ring[next&c.mask].state == statePending {
			if next == c.head && len(c.iov) == 0 {
				c.wstate = writerIdle
				c.mu.Unlock()
				return drainIdle, "", nil
			}
			c.mu.Unlock()
			if err := c.flush(s, next); err != nil {
				return c.stopped(next, err)
			}
			continue
		}
		r := c.ring[next&c.mask]
		st := r.state
		c.mu.Unlock()

		switch st {
		case stateSkip:
			next++
		case stateClose:
			if err := c.flush(s, next); err != nil {
				return c.stopped(next, err)
			}
			return drainClose, r.reason, nil
		case stateReady:
			var parts []Part
			if r.resp != nil {
				parts = r.resp.Parts
			}
			for c.wPart < len(parts) {
				p := &parts[c.wPart]
				if p.Bytes != nil || p.File == nil {
					c.wPart++
					if len(p.Bytes) > 0 {
						c.iov = append(c.iov, p.Bytes)
						if len(c.iov) >= maxIov {
							if err := c.flush(s, next); err != nil {
								return c.stopped(next, err)
							}
						}
					}
					continue
				}
				if c.wOff == 0 {
					if err := c.flush(s, next); err != nil {
						return c.stopped(next, err)
					}
				}
				for c.wOff < p.Len {
					n, err := s.sendFile(p.File, p.Off+c.wOff, p.Len-c.wOff)
					c.wOff += n
					if err != nil {
						return c.stopped(next, err)
					}
				}
				c.wOff = 0
				c.wPart++
			}
			c.wPart = 0
			next++
		}
	}
}

// stopped ends a drain that could not write: blocked (keeping its place) or failed.
func (c *Conn) stopped(next uint64, err error) (drainResult, string, error) {
	if err != errWouldBlock {
		return drainFailed, "", err
	}
	c.wNext = next
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		c.sweep()
		return drainClosed, "", nil
	}
	c.wstate = writerBlocked
	c.mu.Unlock()
	return drainBlocked, "", nil
}

// flush writes the gathered bytes, then retires the requests before upto, whose responses they end.
func (c *Conn) flush(s sink, upto uint64) error {
	if len(c.iov) > 0 {
		err := s.writeBytes(&c.iov)
		if err != nil {
			return err
		}
		c.iov = c.iov[:0]
	}
	c.retire(upto)
	return nil
}

// retire finishes the written requests [head, upto) and frees their slots, waking a waiting reader.
func (c *Conn) retire(upto uint64) {
	if upto <= c.head {
		return
	}
	for seq := c.head; seq < upto; seq++ {
		r := c.ring[seq&c.mask] // answered: nobody else writes it until head passes it
		resp := r.resp
		r.state = stateFree
		finish(r, resp)
	}
	c.mu.Lock()
	c.head = upto
	wakeReader := c.readerWaiting && c.tail-c.head <= c.resumeAt
	if wakeReader {
		c.readerWaiting = false
	}
	c.mu.Unlock()
	if wakeReader {
		c.io.resumeReader()
	}
}

// consumeIov drops the first n bytes of *iov, moving what remains to the front of the same array so
// its capacity is kept for the next gather.
func consumeIov(iov *[][]byte, n int) {
	v := *iov
	i := 0
	for i < len(v) && n >= len(v[i]) {
		n -= len(v[i])
		i++
	}
	if i < len(v) {
		v[i] = v[i][n:]
	}
	k := copy(v, v[i:])
	clear(v[k:])
	*iov = v[:k]
}

// markClosed makes later answers finish at once and stops drain and the reader. Any goroutine.
func (c *Conn) markClosed() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
}

// closeAndSweep marks the connection closed and sweeps it unless a drain is running, which then
// sweeps when it sees the connection closed.
func (c *Conn) closeAndSweep() {
	c.mu.Lock()
	c.closed = true
	take := c.wstate != writerRunning
	if take {
		c.wstate = writerRunning
	}
	c.mu.Unlock()
	if take {
		c.sweep()
	}
}

// sweep runs once the connection is gone, by the drainer (or with no drain possible any more): it
// marks the connection closed and finishes every answered request still queued. Requests answered
// later finish in answer.
func (c *Conn) sweep() {
	c.mu.Lock()
	c.closed = true
	if c.sweepDone {
		c.mu.Unlock()
		return
	}
	c.sweepDone = true
	for seq := c.head; seq < c.tail; seq++ {
		r := c.ring[seq&c.mask]
		if r.state != statePending {
			r.state = stateSwept
			c.swept = append(c.swept, r)
		}
	}
	c.mu.Unlock()
	for i, r := range c.swept {
		finish(r, r.resp)
		c.swept[i] = nil
	}
	c.swept = c.swept[:0]
	clear(c.iov)
	c.iov = c.iov[:0]
}
