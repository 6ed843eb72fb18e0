package netio

import (
	"crypto/x509"
	"log/slog"
	"sync/atomic"
	"time"
)

// TLS runs on the std backend only: crypto/tls needs a net.Conn to read and write, while the gnet and
// io_uring loops hand raw socket bytes to their own buffers. A TLS listener therefore runs std whatever
// backend was asked for; a plaintext listener beside it keeps its backend.

// tlsHandshakeTimeout bounds a client that connects and never finishes its handshake.
const tlsHandshakeTimeout = 10 * time.Second

// tlsBackend is the backend a TLS listener runs: std, saying so once when another was asked for.
func tlsBackend(asked Backend, log *slog.Logger) Backend {
	if asked != BackendStd && asked != BackendAuto {
		log.Info("netio: TLS listeners run the std backend (crypto/tls)", "asked", string(asked))
	}
	return BackendStd
}

// connSecurity is what a connection knows about its peer, and the value its handler keeps on it.
type connSecurity struct {
	peer  []*x509.Certificate // the verified client chain under mutual TLS (set before the first request)
	isTLS bool
	value atomic.Value
}

// TLS reports whether the connection runs TLS.
func (c *Conn) TLS() bool { return c.sec.isTLS }

// SecurityProtocol is the listener's Options.SecurityProtocol.
func (c *Conn) SecurityProtocol() string { return c.core.opts.SecurityProtocol }

// PeerCertificates returns the client's certificate chain, leaf first, when it presented one (mutual
// TLS); nil otherwise. Set before the first request is handed to the Handler.
func (c *Conn) PeerCertificates() []*x509.Certificate { return c.sec.peer }

// Value returns what SetValue stored (nil before). Any goroutine.
func (c *Conn) Value() any { return c.sec.value.Load() }

// SetValue stores the handler's per-connection state (always the same concrete type). Any goroutine.
func (c *Conn) SetValue(v any) { c.sec.value.Store(v) }

// handshake runs the TLS handshake of a TLS connection before any frame is read; it returns why the
// connection is closed, or "".
func (sc *stdConn) handshake() string {
	if sc.tlsc == nil {
		return ""
	}
	_ = sc.tc.SetDeadline(time.Now().Add(tlsHandshakeTimeout))
	if err := sc.tlsc.Handshake(); err != nil {
		// Plaintext against the TLS port, an unknown CA, an expired certificate: the client's problem.
		return "TLS handshake failed: " + err.Error()
	}
	_ = sc.tc.SetDeadline(time.Time{})
	st := sc.tlsc.ConnectionState()
	sc.conn.sec.isTLS = true
	sc.conn.sec.peer = st.PeerCertificates
	return ""
}
