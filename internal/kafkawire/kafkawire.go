// Package kafkawire speaks Kafka's framing one request at a time on a plain connection: a request
// written with its header (v1, or v2 when flexible), a response read back and decoded. The
// transaction coordinator's marker sender and the tests that hand-build requests share it.
package kafkawire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// AppendRequest appends req as a client frames it: size, header with correlation id corr and
// clientID, body.
func AppendRequest(dst []byte, clientID string, corr int32, req kmsg.Request) []byte {
	return kmsg.NewRequestFormatter(kmsg.FormatterClientID(clientID)).AppendRequest(dst, req, corr)
}

// WriteRequest writes req framed (AppendRequest).
func WriteRequest(w io.Writer, clientID string, corr int32, req kmsg.Request) error {
	_, err := w.Write(AppendRequest(nil, clientID, corr, req))
	return err
}

// ReadResponse reads one response frame from r into resp, decoded at resp's version (set it to the
// request's first), and returns the frame's correlation id.
func ReadResponse(r io.Reader, resp kmsg.Response) (corr int32, err error) {
	var size [4]byte
	if _, err := io.ReadFull(r, size[:]); err != nil {
		return 0, err
	}
	n := binary.BigEndian.Uint32(size[:])
	if n < 4 || n > 1<<30 {
		return 0, fmt.Errorf("kafkawire: response frame of %d bytes", n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, err
	}
	corr = int32(binary.BigEndian.Uint32(body))
	body = body[4:]
	// Flexible responses have header v1 (tags), except ApiVersions: clients read its header before
	// knowing what the broker speaks.
	if resp.IsFlexible() && resp.Key() != kmsg.ApiVersions.Int16() {
		rd := kbin.Reader{Src: body}
		kmsg.SkipTags(&rd)
		if err := rd.Complete(); err != nil {
			return corr, err
		}
		body = rd.Src
	}
	return corr, resp.ReadFrom(body)
}

// Exchange writes req with correlation id corr and reads its response into resp (at req's version).
func Exchange(rw io.ReadWriter, clientID string, corr int32, req kmsg.Request, resp kmsg.Response) error {
	if err := WriteRequest(rw, clientID, corr, req); err != nil {
		return err
	}
	resp.SetVersion(req.GetVersion())
	got, err := ReadResponse(rw, resp)
	if err == nil && got != corr {
		return errWrongCorrelation
	}
	return err
}

var errWrongCorrelation = errors.New("kafkawire: response with a wrong correlation id")
