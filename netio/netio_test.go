package netio

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Test frames: seq uint32 | op byte | 3 bytes padding | payload. Responses: size | seq | payload.
const (
	opEcho  byte = iota // respond with the payload
	opSkip              // no response
	opClose             // CloseConn
	opFile              // payload = off int64, len int64: respond with that range of the test file
	opHold              // the test answers later (echo)
)

func frame(seq uint32, op byte, payload []byte) []byte {
	b := make([]byte, 4+8+len(payload))
	binary.BigEndian.PutUint32(b, uint32(8+len(payload)))
	binary.BigEndian.PutUint32(b[4:], seq)
	b[8] = op
	copy(b[12:], payload)
	return b
}

func fileFrame(seq uint32, off, n int64) []byte {
	var p [16]byte
	binary.BigEndian.PutUint64(p[:], uint64(off))
	binary.BigEndian.PutUint64(p[8:], uint64(n))
	return frame(seq, opFile, p[:])
}

// echoResponse builds size | seq | payload for a test frame.
func echoResponse(f []byte) []byte {
	payload := f[8:]
	b := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint32(b, uint32(4+len(payload)))
	copy(b[4:8], f[:4])
	copy(b[8:], payload)
	return b
}

// testHandler answers test frames. Frames with opHold (and every frame when async is set) are passed
// to held instead of being answered at once.
type testHandler struct {
	t       testing.TB
	file    *os.File
	held    chan *Request
	holdAll bool

	// checkOrder: frames of one connection must reach the handler with increasing sequence numbers.
	checkOrder bool
	lastSeq    sync.Map // *Conn → uint32

	requests  atomic.Int64
	responded atomic.Int64 // responses with an OnDone
	done      atomic.Int64 // OnDone calls
	closed    chan *Conn
}

func newTestHandler(t testing.TB) *testHandler {
	return &testHandler{t: t, held: make(chan *Request, 4096), closed: make(chan *Conn, 4096)}
}

func (h *testHandler) HandleRequest(r *Request) {
	h.requests.Add(1)
	if h.checkOrder {
		seq := binary.BigEndian.Uint32(r.Frame)
		if last, ok := h.lastSeq.Load(r.Conn); ok && seq <= last.(uint32) {
			h.t.Errorf("connection %d: request %d reached the handler after %d", r.Conn.ID, seq, last)
		}
		h.lastSeq.Store(r.Conn, seq)
	}
	if h.holdAll || r.Frame[4] == opHold {
		h.held <- r
		return
	}
	h.answer(r)
}

func (h *testHandler) answer(r *Request) {
	switch r.Frame[4] {
	case opSkip:
		r.Skip()
	case opClose:
		r.CloseConn("test asked")
	case opFile:
		off := int64(binary.BigEndian.Uint64(r.Frame[8:]))
		n := int64(binary.BigEndian.Uint64(r.Frame[16:]))
		head := make([]byte, 8)
		binary.BigEndian.PutUint32(head, uint32(4+n+4))
		copy(head[4:], r.Frame[:4])
		h.responded.Add(1)
		r.Respond(&Response{
			Parts:  []Part{{Bytes: head}, {File: h.file, Off: off, Len: n}, {Bytes: []byte("END!")}},
			OnDone: func() { h.done.Add(1) },
		})
	default:
		h.responded.Add(1)
		r.Respond(&Response{Parts: []Part{{Bytes: echoResponse(r.Frame)}}, OnDone: func() { h.done.Add(1) }})
	}
}

func (h *testHandler) ConnClosed(c *Conn) { h.closed <- c }

// waitDone waits until every response's OnDone ran.
func (h *testHandler) waitDone(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for h.done.Load() != h.responded.Load() {
		if time.Now().After(deadline) {
			t.Fatalf("OnDone ran %d times for %d responses", h.done.Load(), h.responded.Load())
		}
		time.Sleep(time.Millisecond)
	}
}

func (h *testHandler) waitClosed(t testing.TB) *Conn {
	t.Helper()
	select {
	case c := <-h.closed:
		return c
	case <-time.After(20 * time.Second):
		t.Fatal("ConnClosed not called")
		return nil
	}
}

func (h *testHandler) nextHeld(t testing.TB) *Request {
	t.Helper()
	select {
	case r := <-h.held:
		return r
	case <-time.After(20 * time.Second):
		t.Fatal("no request reached the handler")
		return nil
	}
}

// logBuffer collects log lines for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

var backends = []Backend{BackendGnet, BackendStd}

func forBackends(t *testing.T, f func(t *testing.T, b Backend)) {
	for _, b := range backends {
		t.Run(string(b), func(t *testing.T) { f(t, b) })
	}
}

func startServer(t testing.TB, b Backend, h Handler, opts Options) (*Server, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	opts.Backend = b
	if opts.Loops == 0 {
		opts.Loops = 2
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	s, err := Listen("127.0.0.1:0", h, opts)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	if s.Backend() != b {
		t.Fatalf("Backend() = %s, want %s", s.Backend(), b)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, logs
}

type client struct {
	t  testing.TB
	c  *net.TCPConn
	br *bufio.Reader
}

func dial(t testing.TB, s *Server) *client {
	t.Helper()
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	return &client{t: t, c: c.(*net.TCPConn), br: bufio.NewReaderSize(c, 64<<10)}
}

func (c *client) send(frames ...[]byte) {
	c.t.Helper()
	if _, err := c.c.Write(bytes.Join(frames, nil)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *client) recv() ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
		return nil, err
	}
	b := make([]byte, binary.BigEndian.Uint32(hdr[:]))
	_, err := io.ReadFull(c.br, b)
	return b, err
}

// expect reads one response and checks its sequence number and payload.
func (c *client) expect(seq uint32, payload []byte) {
	c.t.Helper()
	b, err := c.recv()
	if err != nil {
		c.t.Fatalf("response %d: %v", seq, err)
	}
	if got := binary.BigEndian.Uint32(b); got != seq {
		c.t.Fatalf("response seq %d, want %d", got, seq)
	}
	if !bytes.Equal(b[4:], payload) {
		c.t.Fatalf("response %d: payload differs (%d bytes, want %d)", seq, len(b)-4, len(payload))
	}
}

// expectEOF checks that the server closed the connection.
func (c *client) expectEOF() {
	c.t.Helper()
	b, err := c.recv()
	if err == nil {
		c.t.Fatalf("got a %d-byte response, want the connection closed", len(b))
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		c.t.Fatalf("want EOF, got %v", err)
	}
}

func payloadFor(seq uint32, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(seq + uint32(i)*7)
	}
	return b
}

func TestListenAndConnFields(t *testing.T) {
	forBackends(t, func(t *testing.T, b Backend) {
		h := newTestHandler(t)
		h.holdAll = true
		s, _ := startServer(t, b, h, Options{})
		if s.Addr().(*net.TCPAddr).Port == 0 {
			t.Fatalf("Addr() = %v: no port", s.Addr())
		}
		c1, c2 := dial(t, s), dial(t, s)
		c1.send(frame(1, opEcho, nil))
		c2.send(frame(2, opEcho, nil))
		r1, r2 := h.nextHeld(t), h.nextHeld(t)
		if r1.Conn.ID == r2.Conn.ID || r1.Conn.ID == 0 {
			t.Fatalf("connection ids %d, %d: want distinct and non-zero", r1.Conn.ID, r2.Conn.ID)
		}
		for _, r := range []*Request{r1, r2} {
			cl := c1
			if binary.BigEndian.Uint32(r.Frame) == 2 {
				cl = c2
			}
			if r.Conn.RemoteAddr.String() != cl.c.LocalAddr().String() {
				t.Errorf("RemoteAddr %v, want %v", r.Conn.RemoteAddr, cl.c.LocalAddr())
			}
			if r.Conn.LocalAddr.String() != s.Addr().String() {
				t.Errorf("LocalAddr %v, want %v", r.Conn.LocalAddr, s.Addr())
			}
			h.answer(r)
		}
		c1.expect(1, nil)
		c2.expect(2, nil)
	})
}

func TestAutoBackend(t *testing.T) {
	s, err := Listen("127.0.0.1:0", newTestHandler(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	want := BackendStd
	switch {
	case gnetSupported && autoPrefersUring && UringAvailable() == nil:
		want = BackendUring
	case gnetSupported:
		want = BackendGnet
	}
	if s.Backend() != want {
		t.Fatalf("auto chose %s, want %s", s.Backend(), want)
	}
	if _, err := Listen("127.0.0.1:0", newTestHandler(t), Options{Backend: "nope"}); err == nil {
		t.Fatal("unknown backend accepted")
	}
}

func TestListenAddressInUse(t *testing.T) {
	forBackends(t, func(t *testing.T, b Backend) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		if s, err := Listen(l.Addr().String(), newTestHandler(t), Options{Backend: b}); err == nil {
			s.Close()
			t.Fatal("Listen on a used port succeeded")
		}
	})
}

// The handler answers pipelined requests from goroutines in random order; responses must come back in
// request order.
func TestPipelinedOutOfOrder(t *testing.T) {
	forBackends(t, func(t *testing.T, b Backend) {
		h := newTestHandler(t)
		h.holdAll = true
		h.checkOrder = true
		s, _ := startServer(t, b, h, Options{MaxInFlight: 256})
		c := dial(t, s)
		const n = 200
		frames := make([][]byte, n)
		for i := range frames {
			frames[i] = frame(uint32(i), opEcho, payloadFor(uint32(i), i%50))
		}
		c.send(frames...)
		reqs := make([]*Request, n)
		for i := range reqs {
			reqs[i] = h.nextHeld(t)
		}
		mrand.Shuffle(n, func(i, j int) { reqs[i], reqs[j] = reqs[j], reqs[i] })
		var wg sync.WaitGroup
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < n; i += 8 {
					h.answer(reqs[i])
				}
			}()
		}
		for i := 0; i < n; i++ {
			c.expect(uint32(i), payloadFor(uint32(i), i%50))
		}
		wg.Wait()
		h.waitDone(t)
	})
}

// Frames far larger than a socket read arrive whole, many at once and byte by byte.
func TestLargeAndSplitFrames(t *testing.T) {
	forBackends(t, func(t *testing.T, b Backend) {
		h := newTestHandler(t)
		s, _ := startServer(t, b, h, Options{})
		c := dial(t, s)
		big := make([]byte, 5<<20)
		_, _ = rand.Read(big)
		c.send(frame(1, opEcho, big), frame(2, opEcho, []byte("small")), frame(3, opEcho, big[:1<<20]))
		c.expect(1, big)
		c.expect(2, []byte("small"))
		c.expect(3, big[:1<<20])

		// One byte per write: headers and bodies split at every position.
		f := frame(4, opEcho, []byte("split across many reads"))
		for i := range f {
			if _, err := c.c.Write(f[i : i+1]); err != nil {
				t.Fatal(err)
			}
		}
		c.expect(4, []byte("split across many reads"))
		h.waitDone(t)
	})
}

func makeTestFile(t testing.TB, size int) (*os.File, []byte) {
	t.Helper()
	data := make([]byte, size)
	_, _ = rand.Read(data)
	path := filepath.Join(t.TempDir(), "segment")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, data
}

func (c *client) expectFile(seq uint32, want []byte) {
	c.t.Helper()
	c.expect(seq, append(append([]byte(nil), want...), "END!"...))
}

// File ranges arrive byte-exact from several connections sharing one *os.File, whose own offset never
// moves.
func TestFileRanges(t *testing.T) {
	forBackends(t, func(t *testing.T, b Backend) {
		h := newTestHandler(t)
		f, data := makeTestFile(t, 4<<20)
		h.file = f
		s, _ := startServer(t, b, h, Options{})
		ranges := [][2]int64{{0, 1}, {0, 4 << 20}, {12345, 100000}, {4<<20 - 10, 10}, {1 << 20, 1 << 20}}
		var wg sync.WaitGroup
		for k := 0; k < 4; k++ {
			c := dial(t, s)
			wg.Add(1)
			go func() {
				defer wg.Done()
				var frames [][]byte
				for i, r := range ranges {
					frames = append(frames, fileFrame(uint32(i), r[0], r[1]), frame(uint32(100+i), opEcho, []byte("x")))
				}
				c.send(frames...)
				for i, r := range ranges {
					c.expectFile(uint32(i), data[r[0]:r[0]+r[1]])
					c.expect(uint32(100+i), []byte("x"))
				}
			}()
		}
		wg.Wait()
		if off, err := f.Seek(0, io.SeekCurrent); err != nil || off != 0 {
			t.Fatalf("file offset moved to %d (%v)", off, err)
		}
		h.waitDone(t)
	})
}

// A client that reads slowly makes sendfile hit EAGAIN; the range still arrives whole and the loop
// keeps serving other connections meanwhile.
func TestFileRangeSlowReader(t *testing.T) {
	forBackends(t, func(t *testing.T, b Backend) {
		h := newTestHandler(t)
		f, data := makeTestFile(t, 16<<20)
		h.file = f
		s, _ := startServer(t, b, h, Options{Loops: 1})
		blockedBefore := sendfileWouldBlock.Load()

		slow := dial(t, s)
		_ = slow.c.SetReadBuffer(16 << 10)
		slow.send(fileFrame(1, 0, int64(len(data))), frame(2, opEcho, []byte("after")))

		// Wait until the server is stuck on the slow reader, then check another connection.
		time.Sleep(50 * time.Millisecond)
		other := dial(t, s)
		other.send(frame(7, opEcho, []byte("not starved")))
		other.expect(7, []byte("not starved"))

		var hdr [8]byte
		if _, err := io.ReadFull(slow.br, hdr[:]); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(data)+4)
		for off := 0; off < len(got); {
			end := min(off+64<<10, len(got))
			n, err := slow.br.Read(got[off:end])
			if err != nil {
				t.Fatalf("after %d bytes: %v", off, err)
			}
			off += n
			if off < 4<<20 {
				time.Sleep(200 * time.Microsecond)
			}
		}
		if binary.BigEndian.Uint32(hdr[4:]) != 1 || !bytes.Equal(got[:len(data)], data) || string(got[len(data):]) != "END!" {
			t.Fatal("file range corrupted")
		}
		slow.expect(2, []byte("after"))
		if (b == BackendGnet || b == BackendUring) && runtime.GOOS == "linux" && sendfileWouldBlock.Load() == blockedBefore {
			t.Error("sendfile never hit EAGAIN: the slow path was not exercised")
		}
		h.waitDone(t)
	})
}

func TestSkip(t *testing.T) {
	forBackends(t, func(t *testing.T, b Backend) {
		h := newTestHandler(t)
		s, _ := startServer(t, b, h, Options{})
		c := dial(t, s)
		c.send(frame(1, opEcho, []byte("a")), frame(2, opSkip, nil), frame(3, opHold, []byte("c")),
			frame(4, opSkip, nil), frame(5, opEcho, []byte("e")))
		c.expect(1, []byte("a"))
		r := h.nextHeld(t)
		// Nothing may overtake the held request 3.
		_ = c.c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if _, err := c.br.Peek(1); err == nil {
			t.Fatal("a response overtook an unanswered request")
		}
		_ = c.c.SetReadDeadline(time.Now().Add(20 * time.Second))
		h.answer(r)
		c.expect(3, []byte("c"))
		c.expect(5, []byte("e"))
		h.waitDone(t)
	})
}

func TestCloseConn(t *testing.T) {
	forBackends(t, func(t *testing.T, b Backend) {
		h := newTestHandler(t)
		f, data := makeTestFile(t, 8<<20)
		h.file = f
		s, logs := startServer(t, b, h, Options{})
		c := dial(t, s)
		big := payloadFor(9, 3<<20)
		c.send(frame(1, opHold, big), frame(2, opClose, nil), frame(3, opEcho, []byte("never")))
		r := h.nextHeld(t)
		time.Sleep(20 * time.Millisecond)
		h.answer(r) // the close was answered first: it must wait for this response
		c.expect(1, big)
		c.expectEOF()
		h.waitClosed(t)
		if h.requests.Load() != 2 {
			t.Errorf("%d requests reached the handler, want 2 (none after the close)", h.requests.Load())
		}
		if !strings.Contains(logs.String(), "test asked") {
			t.Errorf("close reason not logged: %q", logs.String())
		}

		// The close also waits for a file range that fills the socket.
		c = dial(t, s)
		_ = c.c.SetReadBuffer(16 << 10)
		c.send(fileFrame(1, 0, int64(len(data))), frame(2, opClose, nil))
		time.Sleep(20 * time.Millisecond)
		c.expectFile(1, data)
		c.expectEOF()
		h.waitClosed(t)
		h.waitDone(t)
	})
}

func TestConnCloseMethod(t *testing.T) {
	forBackends(t, func(t *testing.T, b Backend) {
		h := newTestHandler(t)
		s, _ := startServer(t, b, h, Options{})
		c := dial(t, s)
		c.send(frame(1, opHold, nil))
		r := h.nextHeld(t)
		r.Conn.Close()
		c.expectEOF()
		if closed := h.waitClosed(t); closed != r.Conn {
			t.Fatal("ConnClosed got another connection")
		}
		h.answer(r) // after close: only OnDone
		h.waitDone(t)
	})
}

func TestGarbageSizes(t *testing.T) {
	forBackends(t, func(t *testing.T, b Backend) {
		cases := []struct {
			name string
			size int32
		}{
			{"negative", -5},
			{"too large", 1<<20 + 1},
			{"shorter than a header", 7},
			{"zero", 0},
		}
		h := newTestHandler(t)
		s, logs := startServer(t, b, h, Options{MaxFrameBytes: 1 << 20})
		good := dial(t, s)
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				c := dial(t, s)
				var hdr [4]byte
				binary.BigEndian.PutUint32(hdr[:], uint32(tc.size))
				c.send(frame(1, opEcho, []byte("ok")))
				c.expect(1, []byte("ok"))
				c.send(append(hdr[:], make([]byte, 16)...))
				c.expectEOF()
				h.waitClosed(t)
				if want := fmt.Sprintf("%d", tc.size); !strings.Contains(logs.String(), want) {
					t.Errorf("log lacks the size %s: %q", want, logs.String())
				}
			})
		}
		// Exactly the limit is fine, and other connections were not disturbed.
		good.send(frame(9, opEcho, make([]byte, 1<<20-8)))
		good.expect(9, make([]byte, 1<<20-8))
		if n := strings.Count(logs.String(), "closing connection"); n != len(cases) {
			t.Errorf("%d log lines for %d bad connections:\n%s", n, len(cases), logs.String())
		}
		h.waitDone(t)
	})
}

// A client that leaves mid-frame, or with requests in flight, leaks nothing: late answers run OnDone.
func TestDisconnects(t *testing.T) {
	forBackends(t, func(t *testing.T, b Backend) {
		h := newTestHandler(t)
		f, _ := makeTestFile(t, 8<<20)
		h.file = f
		s, _ := startServer(t, b, h, Options{})

		c := dial(t, s)
		full := frame(1, opEcho, make([]byte, 1000))
		c.send(full[:500])
		_ = c.c.Close()
		h.waitClosed(t)
		if h.requests.Load() != 0 {
			t.Fatal("a partial frame reached the handler")
		}

		c = dial(t, s)
		c.send(frame(1, opHold, nil), frame(2, opHold, nil), frame(3, opHold, nil), fileFrame(4, 0, 8<<20))
		held := []*Request{h.nextHeld(t), h.nextHeld(t), h.nextHeld(t)}
		_ = c.c.Close()
		h.waitClosed(t)
		for _, r := range held {
			h.answer(r)
		}

		// Disconnect while a large file range is being sent.
		c = dial(t, s)
		_ = c.c.SetReadBuffer(16 << 10)
		c.send(fileFrame(1, 0, 8<<20))
		if _, err := io.ReadFull(c.br, make([]byte, 1000)); err != nil {
			t.Fatal(err)
		}
		_ = c.c.Close()
		h.waitClosed(t)
		h.waitDone(t)
	})
}

// At MaxInFlight the handler gets no more requests until responses drain; none is lost.
func TestBackPressure(t *testing.T) {
	forBackends(t, func(t *testing.T, b Backend) {
		h := newTestHandler(t)
		h.holdAll = true
		const limit, n = 4, 60
		s, _ := startServer(t, b, h, Options{MaxInFlight: limit})
		c := dial(t, s)
		var frames [][]byte
		for i := 0; i < n; i++ {
			frames = append(frames, frame(uint32(i), opEcho, payloadFor(uint32(i), 100)))
		}
		c.send(frames...)

		var outstanding []*Request
		received := 0
		for answered := 0; answered < n; {
			for len(outstanding) < limit && answered+len(outstanding) < n {
				outstanding = append(outstanding, h.nextHeld(t))
			}
			// The limit is reached: give netio a moment to (wrongly) hand over one more.
			time.Sleep(2 * time.Millisecond)
			if extra := len(h.held); extra > 0 {
				t.Fatalf("%d requests beyond MaxInFlight=%d reached the handler", extra, limit)
			}
			// Answer the newest first; the oldest unblocks everything.
			for i := len(outstanding) - 1; i >= 0; i-- {
				h.answer(outstanding[i])
			}
			answered += len(outstanding)
			for ; received < answered; received++ {
				c.expect(uint32(received), payloadFor(uint32(received), 100))
			}
			outstanding = outstanding[:0]
		}
		h.waitDone(t)
	})
}

func TestManyConnections(t *testing.T) {
	forBackends(t, func(t *testing.T, b Backend) {
		h := newTestHandler(t)
		h.holdAll = true
		s, _ := startServer(t, b, h, Options{})
		// Answer everything from a pool of goroutines, in whatever order they pick requests up.
		stop := make(chan struct{})
		var workers sync.WaitGroup
		for w := 0; w < 4; w++ {
			workers.Add(1)
			go func() {
				defer workers.Done()
				for {
					select {
					case r := <-h.held:
						h.answer(r)
					case <-stop:
						return
					}
				}
			}()
		}
		const conns, reqs = 64, 30
		var wg sync.WaitGroup
		for i := 0; i < conns; i++ {
			c := dial(t, s)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := 0; j < reqs; j += 10 {
					var frames [][]byte
					for k := j; k < j+10; k++ {
						frames = append(frames, frame(uint32(k), opEcho, payloadFor(uint32(i*k), 10+k)))
					}
					c.send(frames...)
					for k := j; k < j+10; k++ {
						c.expect(uint32(k), payloadFor(uint32(i*k), 10+k))
					}
				}
			}()
		}
		wg.Wait()
		close(stop)
		workers.Wait()
		h.waitDone(t)
		if h.requests.Load() != conns*reqs {
			t.Fatalf("%d requests, want %d", h.requests.Load(), conns*reqs)
		}
	})
}

// Close while clients send and answers arrive from other goroutines: every connection is reported
// closed, every OnDone runs, Close returns.
func TestCloseWhileBusy(t *testing.T) {
	forBackends(t, func(t *testing.T, b Backend) {
		h := newTestHandler(t)
		h.holdAll = true
		f, _ := makeTestFile(t, 1<<20)
		h.file = f
		s, _ := startServer(t, b, h, Options{})
		stop := make(chan struct{})
		var answerers sync.WaitGroup
		for w := 0; w < 2; w++ {
			answerers.Add(1)
			go func() {
				defer answerers.Done()
				for {
					select {
					case r := <-h.held:
						h.answer(r)
					case <-stop:
						for {
							select {
							case r := <-h.held:
								h.answer(r)
							default:
								return
							}
						}
					}
				}
			}()
		}
		const conns = 8
		var clients sync.WaitGroup
		for i := 0; i < conns; i++ {
			c := dial(t, s)
			// One answered request first: the server accepted this connection, so it must report it.
			c.send(frame(0, opEcho, nil))
			c.expect(0, nil)
			clients.Add(2)
			go func() { // writer: until the connection breaks
				defer clients.Done()
				for k := uint32(1); ; k++ {
					f := frame(k, opEcho, payloadFor(k, 200))
					if k%5 == 0 {
						f = fileFrame(k, 0, 1<<20)
					}
					if _, err := c.c.Write(f); err != nil {
						return
					}
				}
			}()
			go func() { // reader: until the connection breaks
				defer clients.Done()
				for {
					if _, err := c.recv(); err != nil {
						return
					}
				}
			}()
		}
		time.Sleep(100 * time.Millisecond)
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		for i := 0; i < conns; i++ {
			h.waitClosed(t)
		}
		clients.Wait()
		close(stop)
		answerers.Wait()
		h.waitDone(t)
		if _, err := net.Dial("tcp", s.Addr().String()); err == nil {
			t.Error("still accepting after Close")
		}
	})
}

// At MaxInFlight the server stops reading the socket, so a client that keeps sending blocks instead of
// filling the broker's memory; once answers flow, every request gets through.
func TestBackPressureReachesClient(t *testing.T) {
	forBackends(t, func(t *testing.T, b Backend) {
		h := newTestHandler(t)
		h.holdAll = true
		s, _ := startServer(t, b, h, Options{MaxInFlight: 2})
		c := dial(t, s)
		const n, size = 40, 1 << 20 // far beyond what socket buffers hold
		payload := payloadFor(3, size)
		var written atomic.Int64
		writeErr := make(chan error, 1)
		go func() {
			for i := 0; i < n; i++ {
				if _, err := c.c.Write(frame(uint32(i), opEcho, payload)); err != nil {
					writeErr <- err
					return
				}
				written.Add(1)
			}
			writeErr <- nil
		}()
		first := h.nextHeld(t)
		if g, ok := first.Conn.io.(interface{ pausesReads() bool }); ok && runtime.GOOS == "linux" && !g.pausesReads() {
			t.Fatal("gnet's epoll descriptor not found: reads cannot pause")
		}
		// Wait until the writer stalls (it must, long before n); without back-pressure it finishes.
		for last, still := int64(-1), 0; still < 5; {
			time.Sleep(100 * time.Millisecond)
			w := written.Load()
			if w == n {
				t.Fatalf("the client wrote all %d MiB while the server held 2 requests: no back-pressure", n)
			}
			if w == last {
				still++
			} else {
				last, still = w, 0
			}
		}

		// Answer everything; read all responses.
		go func() {
			h.answer(first)
			for i := 1; i < n; i++ {
				h.answer(h.nextHeld(t))
			}
		}()
		for i := 0; i < n; i++ {
			c.expect(uint32(i), payload)
		}
		if err := <-writeErr; err != nil {
			t.Fatal(err)
		}
		h.waitDone(t)
	})
}

// Random frames written in random pieces, answered in random order by several goroutines, some
// skipped, some with file ranges or many small parts: every answered request comes back in order,
// byte-exact.
func TestRandomizedTraffic(t *testing.T) {
	forBackends(t, func(t *testing.T, b Backend) {
		h := newTestHandler(t)
		h.holdAll = true
		h.checkOrder = true
		f, data := makeTestFile(t, 1<<20)
		h.file = f
		s, _ := startServer(t, b, h, Options{MaxInFlight: 8})
		stop := make(chan struct{})
		var answerers sync.WaitGroup
		for w := 0; w < 3; w++ {
			answerers.Add(1)
			go func() {
				defer answerers.Done()
				rng := mrand.New(mrand.NewPCG(uint64(w), 1))
				var pending []*Request
				for {
					select {
					case r := <-h.held:
						pending = append(pending, r)
						if len(pending) < 3 {
							continue
						}
					case <-time.After(time.Millisecond):
					case <-stop:
						return
					}
					rng.Shuffle(len(pending), func(i, j int) { pending[i], pending[j] = pending[j], pending[i] })
					for _, r := range pending {
						answerMany(h, r)
					}
					pending = pending[:0]
				}
			}()
		}
		var clients sync.WaitGroup
		for k := 0; k < 4; k++ {
			c := dial(t, s)
			clients.Add(1)
			go func() {
				defer clients.Done()
				rng := mrand.New(mrand.NewPCG(uint64(k), 2))
				var stream []byte
				type want struct {
					seq     uint32
					payload []byte
				}
				var wants []want
				for i := uint32(0); i < 150; i++ {
					switch op := rng.IntN(10); {
					case op == 0:
						stream = append(stream, frame(i, opSkip, payloadFor(i, rng.IntN(50)))...)
					case op == 1:
						off, n := rng.Int64N(1<<19), 1+rng.Int64N(1<<19)
						stream = append(stream, fileFrame(i, off, n)...)
						wants = append(wants, want{i, append(append([]byte(nil), data[off:off+n]...), "END!"...)})
					case op == 2:
						p := payloadFor(i, 600+rng.IntN(1000)) // answered in many tiny parts
						stream = append(stream, frame(i, opHold, p)...)
						wants = append(wants, want{i, p})
					default:
						p := payloadFor(i, rng.IntN(3000))
						stream = append(stream, frame(i, opEcho, p)...)
						wants = append(wants, want{i, p})
					}
				}
				go func() {
					for len(stream) > 0 {
						n := min(len(stream), 1+rng.IntN(5000))
						if _, err := c.c.Write(stream[:n]); err != nil {
							return
						}
						stream = stream[n:]
					}
				}()
				for _, w := range wants {
					c.expect(w.seq, w.payload)
				}
			}()
		}
		clients.Wait()
		close(stop)
		answerers.Wait()
		h.waitDone(t)
	})
}

// answerMany answers like testHandler.answer, except that opHold echoes come back one byte per part,
// which is more parts than one writev takes.
func answerMany(h *testHandler, r *Request) {
	if r.Frame[4] != opHold {
		h.answer(r)
		return
	}
	whole := echoResponse(r.Frame)
	parts := make([]Part, len(whole))
	for i := range whole {
		parts[i] = Part{Bytes: whole[i : i+1]}
	}
	h.responded.Add(1)
	r.Respond(&Response{Parts: parts, OnDone: func() { h.done.Add(1) }})
}

// A file range beyond the end of its file is a handler bug: the connection closes with a warning
// (the client cannot be sent a short response), OnDone still runs.
func TestFileRangePastEOF(t *testing.T) {
	forBackends(t, func(t *testing.T, b Backend) {
		h := newTestHandler(t)
		f, _ := makeTestFile(t, 1000)
		h.file = f
		s, logs := startServer(t, b, h, Options{})
		c := dial(t, s)
		c.send(frame(1, opEcho, []byte("ok")), fileFrame(2, 500, 1000))
		c.expect(1, []byte("ok"))
		var hdr [8]byte
		if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c.br, make([]byte, 1000+4)); err == nil {
			t.Fatal("a short file range was sent as if whole")
		}
		h.waitClosed(t)
		h.waitDone(t)
		if !strings.Contains(logs.String(), "unexpected EOF") {
			t.Errorf("no warning about the short file: %q", logs.String())
		}
	})
}

func TestFrameBuffers(t *testing.T) {
	for _, n := range []int{8, 511, 512, 513, 4096, 1 << 20, 1<<20 + 1, 5 << 20} {
		b := getFrame(n)
		if len(*b) != n || cap(*b) < n {
			t.Fatalf("getFrame(%d): len %d cap %d", n, len(*b), cap(*b))
		}
		putFrame(b)
	}
	// A frame's size alone does not allocate it; the buffer grows with the bytes, keeping them.
	const size = 10<<20 + 3
	b := startFrame(size)
	if cap(*b) > frameEagerBytes {
		t.Fatalf("a %d-byte frame allocated %d bytes before any data", size, cap(*b))
	}
	for i := range *b {
		(*b)[i] = byte(i)
	}
	for len(*b) < size {
		n := len(*b)
		b = growFrame(b, size)
		if (*b)[n-1] != byte(n-1) || (*b)[n/2] != byte(n/2) {
			t.Fatal("growFrame lost bytes")
		}
		for i := n; i < len(*b); i++ {
			(*b)[i] = byte(i)
		}
	}
	if len(*b) != size {
		t.Fatalf("grew to %d, want %d", len(*b), size)
	}
	putFrame(b)
}

// Clients that announce huge frames and send nothing more cost the server little memory.
func TestHugeFrameHeadersAllocateLittle(t *testing.T) {
	forBackends(t, func(t *testing.T, b Backend) {
		h := newTestHandler(t)
		s, _ := startServer(t, b, h, Options{})
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for i := 0; i < 8; i++ {
			c := dial(t, s)
			var hdr [4]byte
			binary.BigEndian.PutUint32(hdr[:], DefaultMaxFrameBytes)
			c.send(hdr[:], []byte("some bytes of a frame that never ends"))
		}
		time.Sleep(200 * time.Millisecond)
		runtime.ReadMemStats(&after)
		if grew := after.TotalAlloc - before.TotalAlloc; grew > 256<<20 {
			t.Fatalf("8 frame headers made the server allocate %d MiB", grew>>20)
		}
	})
}
