// Package wire is loadgen's lean Kafka protocol layer for the native client: framed, pipelined
// connections, record batches encoded once and restamped per send, and hand-encoded produce
// requests written with writev. Setup requests (Metadata, InitProducerID, Fetch) go through kmsg,
// whose per-request allocations do not matter; nothing here allocates per record.
package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// ClientID is the client.id loadgen's native client sends.
const ClientID = "loadgen-native"

// Conn is one broker connection. Requests may be pipelined: any number of writers (serialized by
// the caller or by Conn's write lock) and one reader taking responses in request order.
type Conn struct {
	Addr string
	nc   net.Conn
	br   *bufio.Reader

	wmu  sync.Mutex
	corr int32
	hdr  []byte // scratch for request headers, under wmu
	bufs net.Buffers
}

// Dial connects to addr.
func Dial(addr string, timeout time.Duration) (*Conn, error) {
	nc, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	return &Conn{Addr: addr, nc: nc, br: bufio.NewReaderSize(nc, 256<<10)}, nil
}

// Close closes the connection; a blocked reader returns an error.
func (c *Conn) Close() error { return c.nc.Close() }

// appendHeader appends a non-flexible request header (v1) after 4 bytes reserved for the size.
func appendHeader(dst []byte, key, version int16, corr int32) []byte {
	dst = append(dst, 0, 0, 0, 0)
	dst = binary.BigEndian.AppendUint16(dst, uint16(key))
	dst = binary.BigEndian.AppendUint16(dst, uint16(version))
	dst = binary.BigEndian.AppendUint32(dst, uint32(corr))
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(ClientID)))
	return append(dst, ClientID...)
}

// WriteRequest encodes req (a non-flexible version, set by the caller) and writes it.
func (c *Conn) WriteRequest(req kmsg.Request) error {
	if req.IsFlexible() {
		return fmt.Errorf("wire: %s v%d is flexible; use a non-flexible version", kmsg.NameForKey(req.Key()), req.GetVersion())
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.corr++
	b := appendHeader(c.hdr[:0], req.Key(), req.GetVersion(), c.corr)
	b = req.AppendTo(b)
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	c.hdr = b[:0]
	_, err := c.nc.Write(b)
	return err
}

// WriteVec writes one request whose body is head followed by parts (a produce request's record
// batches, sent without copying). head must start with the 4-byte size and request header as
// built by BeginRequest; the size is filled in here.
func (c *Conn) WriteVec(head []byte, parts [][]byte) error {
	n := len(head) - 4
	for _, p := range parts {
		n += len(p)
	}
	binary.BigEndian.PutUint32(head, uint32(n))
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.bufs = append(c.bufs[:0], head)
	c.bufs = append(c.bufs, parts...)
	bufs := c.bufs
	_, err := bufs.WriteTo(c.nc)
	clear(c.bufs[:cap(c.bufs)])
	return err
}

// NextCorrelation reserves a correlation ID for a request written with WriteVec.
func (c *Conn) NextCorrelation() int32 {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.corr++
	return c.corr
}

// BeginRequest appends the size placeholder and request header to dst.
func BeginRequest(dst []byte, key, version int16, corr int32) []byte {
	return appendHeader(dst, key, version, corr)
}

// ReadResponse reads the next response frame into buf (grown as needed) and returns its body
// after the correlation ID (non-flexible response header).
func (c *Conn) ReadResponse(buf []byte) (body, grown []byte, err error) {
	var sz [4]byte
	if _, err := io.ReadFull(c.br, sz[:]); err != nil {
		return nil, buf, err
	}
	n := int(binary.BigEndian.Uint32(sz[:]))
	if n < 4 || n > 1<<30 {
		return nil, buf, fmt.Errorf("wire: response size %d", n)
	}
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(c.br, buf); err != nil {
		return nil, buf, err
	}
	return buf[4:], buf, nil
}

// Request sends req and reads its response; only for connections with nothing else in flight.
func (c *Conn) Request(req kmsg.Request, timeout time.Duration) (kmsg.Response, error) {
	_ = c.nc.SetDeadline(time.Now().Add(timeout))
	defer c.nc.SetDeadline(time.Time{})
	if err := c.WriteRequest(req); err != nil {
		return nil, err
	}
	body, _, err := c.ReadResponse(nil)
	if err != nil {
		return nil, err
	}
	resp := req.ResponseKind()
	resp.SetVersion(req.GetVersion())
	if err := resp.ReadFrom(body); err != nil {
		return nil, fmt.Errorf("wire: %s response: %w", kmsg.NameForKey(req.Key()), err)
	}
	return resp, nil
}

// ErrClosed is returned for requests on a connection that was closed.
var ErrClosed = errors.New("wire: connection closed")
