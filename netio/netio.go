// Package netio is the broker's connection layer. It reads length-prefixed frames (a 4-byte big-endian
// size, then the body), hands each complete frame to a Handler, and writes the responses in request order
// per connection, as bytes plus zero-copy file ranges (sendfile on Linux). It knows nothing of Kafka.
//
// Three backends sit behind one API: gnet (epoll/kqueue event loops), std (a reader and a writer
// goroutine per connection on Go's net package) and uring (an io_uring event loop, Linux only). All
// share the per-connection request ring, response ordering and write-out algorithm in queue.go. A
// backend supplies:
//   - a listener that returns a backendServer (close) and reports the bound address;
//   - a reader that parses frames into pooled buffers (startFrame, growFrame, checkFrameSize) and calls
//     Conn.dispatch while Conn.hasRoom, pausing otherwise until resumeReader;
//   - a connIO per connection: wake (get the writer to drain), resumeReader, close;
//   - a sink per connection: writeBytes and sendFile, which may stop with errWouldBlock (the drain
//     keeps its place) as long as the backend resumes the drain when the socket is writable;
//   - on close: Conn.sweep (or closeAndSweep) from the drainer, then Handler.ConnClosed once.
package netio

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/sluicebroker/sluice/internal/acceptretry"
	"github.com/sluicebroker/sluice/internal/uring"
)

// Backend names a connection backend.
type Backend string

const (
	// BackendAuto picks by the bake-off (see autoPrefersUring): uring where io_uring can run, else
	// gnet where it is supported (Linux, BSD, macOS), else std.
	BackendAuto Backend = "auto"
	// BackendGnet runs gnet v2 event loops.
	BackendGnet Backend = "gnet"
	// BackendStd runs a reader and a writer goroutine per connection on net.TCPConn.
	BackendStd Backend = "std"
	// BackendUring runs io_uring event loops (Linux; Listen fails where io_uring is unavailable).
	BackendUring Backend = "uring"
)

// Defaults for zero Options fields.
const (
	DefaultMaxFrameBytes = 100 << 20
	DefaultMaxInFlight   = 64
)

// sendfileWouldBlock counts file sends that found the socket full and waited for writability; tests
// use it to check that the slow path ran.
var sendfileWouldBlock atomic.Uint64

// minFrameBytes is the smallest body a request can have: api key, version and correlation id.
const minFrameBytes = 8

// Options configure a Server. The zero value is valid.
type Options struct {
	Backend Backend
	// Loops is the number of gnet or uring event loops (0 = GOMAXPROCS); std ignores it.
	Loops int
	// MaxFrameBytes bounds a frame's body; a larger (or negative) size closes the connection.
	MaxFrameBytes int32
	// MaxInFlight bounds the requests of one connection that were handed to the Handler and whose
	// responses are not yet written. At the limit the connection is not read until responses drain
	// (gnet resumes reading at half the limit).
	MaxInFlight int
	// TLS, when set, serves TLS on every connection (tls.go). Only the std backend does TLS: with TLS,
	// Listen runs std whatever Backend says (gnet and io_uring hand raw bytes to their loops).
	TLS *tls.Config
	// SecurityProtocol names the listener's security protocol as Kafka does (PLAINTEXT, SSL,
	// SASL_PLAINTEXT, SASL_SSL): netio only hands it to the handler (Conn.SecurityProtocol), which
	// decides what it means. Empty: not said.
	SecurityProtocol string
	Logger           *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.Backend == "" {
		o.Backend = BackendAuto
	}
	if o.Loops <= 0 {
		o.Loops = runtime.GOMAXPROCS(0)
	}
	if o.MaxFrameBytes <= 0 {
		o.MaxFrameBytes = DefaultMaxFrameBytes
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = DefaultMaxInFlight
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Handler receives the frames of every connection.
type Handler interface {
	// HandleRequest gets one complete frame (the body, without the size prefix). Calls for one
	// connection arrive in order and never concurrently with each other. It must not block: long work
	// goes to another goroutine, which later answers r. r.Frame stays valid until the request's
	// response has been written (or the connection is gone): netio does not reuse it before then.
	HandleRequest(r *Request)
	// ConnClosed is called once when a connection is gone, after its last HandleRequest. Requests still
	// unanswered may be answered later; their responses are dropped and OnDone runs. Like
	// HandleRequest it may run on an event loop: it must not block.
	ConnClosed(c *Conn)
}

// Server accepts connections on one address.
type Server struct {
	backend Backend
	addr    net.Addr
	impl    backendServer
	core    *core
}

// backendServer is what a backend implements besides its per-connection sink.
type backendServer interface {
	close() error
}

// core is what every backend shares: the handler, options and connection ids.
type core struct {
	handler Handler
	opts    Options
	log     *slog.Logger
	nextID  atomic.Uint64
	open    atomic.Int64 // connections open: counted up by newConn, down by countClosed
	// acceptFailed throttles the log of failing accepts.
	acceptFailed acceptretry.Failures
}

// acceptFailedMsg is the (throttled) log line of a failing accept.
const acceptFailedMsg = "netio: accept failed; retrying every 10ms (raise the open files limit if out of descriptors)"

// countClosed is the Handler the backends call: it counts the connection closed, then tells
// the broker's handler.
type countClosed struct {
	Handler
	open *atomic.Int64
}

func (h countClosed) ConnClosed(c *Conn) {
	h.open.Add(-1)
	h.Handler.ConnClosed(c)
}

// Listen binds addr ("host:port"; a "tcp://" prefix is accepted) and serves it until Close. The server is
// bound and accepting when Listen returns.
func Listen(addr string, h Handler, opts Options) (*Server, error) {
	if h == nil {
		return nil, errors.New("netio: nil handler")
	}
	opts = opts.withDefaults()
	addr = strings.TrimPrefix(addr, "tcp://")
	c := &core{opts: opts, log: opts.Logger}
	c.handler = countClosed{Handler: h, open: &c.open}

	b := opts.Backend
	if opts.TLS != nil {
		b = tlsBackend(b, c.log)
	}
	auto := b == BackendAuto
	if auto {
		b = autoBackend(c.log)
	}
	var (
		impl  backendServer
		bound net.Addr
		err   error
	)
	switch b {
	case BackendGnet:
		if !gnetSupported {
			return nil, fmt.Errorf("netio: backend gnet is not supported on %s", runtime.GOOS)
		}
		impl, bound, err = listenGnet(addr, c)
	case BackendStd:
		impl, bound, err = listenStd(addr, c)
	case BackendUring:
		impl, bound, err = listenUring(addr, c)
		if err != nil && auto && errors.Is(err, uring.ErrUnsupported) {
			// The probe passed but a loop's ring did not (e.g. locked-memory limits): still gnet.
			c.log.Info("netio: io_uring unavailable, auto falls back to gnet", "err", err)
			b = BackendGnet
			impl, bound, err = listenGnet(addr, c)
		}
	default:
		return nil, fmt.Errorf("netio: unknown backend %q", b)
	}
	if err != nil {
		return nil, err
	}
	return &Server{backend: b, addr: bound, impl: impl, core: c}, nil
}

// SecurityProtocol is Options.SecurityProtocol.
func (s *Server) SecurityProtocol() string { return s.core.opts.SecurityProtocol }

// OpenConns is the number of client connections open now.
func (s *Server) OpenConns() int64 { return s.core.open.Load() }

// autoPrefersUring is the bake-off's verdict (results/2026-11-23-2core-vm-bakeoff): auto runs io_uring
// where it can. Tests flip it to check the fallback.
var autoPrefersUring = true

// autoBackend resolves auto. When io_uring is preferred but cannot run here (disabled by sysctl, a
// kernel too old, seccomp), it says so in exactly one log line and picks gnet.
func autoBackend(log *slog.Logger) Backend {
	if !gnetSupported {
		return BackendStd
	}
	if !autoPrefersUring {
		return BackendGnet
	}
	if err := UringAvailable(); err != nil {
		log.Info("netio: io_uring unavailable, auto falls back to gnet", "err", err)
		return BackendGnet
	}
	return BackendUring
}

// Addr returns the bound address (with the real port when listening on port 0).
func (s *Server) Addr() net.Addr { return s.addr }

// Backend returns the backend that runs.
func (s *Server) Backend() Backend { return s.backend }

// TLS says whether the server serves TLS.
func (s *Server) TLS() bool { return s.core.opts.TLS != nil }

// Close stops accepting, closes every connection (ConnClosed runs for each) and waits for the
// backend's goroutines to end. Responses answered later only run their OnDone.
func (s *Server) Close() error { return s.impl.close() }

// logWriteFailure logs why writing to c failed: quietly when the client went away, loudly when the
// cause is on our side (a file range past the end of its file, a file closed before OnDone).
func (co *core) logWriteFailure(c *Conn, err error) {
	switch {
	case errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNRESET), errors.Is(err, net.ErrClosed),
		errors.Is(err, errConnClosed), errors.Is(err, io.EOF):
		co.log.Debug("netio: write failed", "remote", c.RemoteAddr, "err", err)
	default:
		co.log.Warn("netio: closing connection", "remote", c.RemoteAddr, "reason", "write failed", "err", err)
	}
}
