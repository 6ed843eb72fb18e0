package kafkawire

import (
	"encoding/binary"
	"io"
	"net"
	"testing"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// serveOne reads one request frame as a broker does, checks its header, and answers resp with a
// response header carrying a tag when flexible (a reader that assumed empty tags would misread it).
func serveOne(t *testing.T, conn net.Conn, wantClient string, resp kmsg.Response) {
	t.Helper()
	var size [4]byte
	if _, err := io.ReadFull(conn, size[:]); err != nil {
		t.Error(err)
		return
	}
	frame := make([]byte, binary.BigEndian.Uint32(size[:]))
	if _, err := io.ReadFull(conn, frame); err != nil {
		t.Error(err)
		return
	}
	r := kbin.Reader{Src: frame}
	key, version, corr := r.Int16(), r.Int16(), r.Int32()
	if client := r.NullableString(); client == nil || *client != wantClient {
		t.Errorf("client id %v, want %q", client, wantClient)
	}
	req := kmsg.RequestForKey(key)
	req.SetVersion(version)
	if req.IsFlexible() {
		kmsg.SkipTags(&r)
	}
	if err := req.ReadFrom(r.Src); err != nil {
		t.Errorf("request body: %v", err)
	}
	resp.SetVersion(version)
	out := kbin.AppendInt32([]byte{0, 0, 0, 0}, corr)
	if resp.IsFlexible() && key != kmsg.ApiVersions.Int16() {
		out = append(out, 1, 7, 2, 'h', 'i') // one tag: key 7, 2 bytes
	}
	out = resp.AppendTo(out)
	binary.BigEndian.PutUint32(out, uint32(len(out)-4))
	if _, err := conn.Write(out); err != nil {
		t.Error(err)
	}
}

func TestExchange(t *testing.T) {
	for _, version := range []int16{1, 9, 12} { // header v1; v2 with tags from 9
		client, server := net.Pipe()
		answer := kmsg.NewPtrMetadataResponse()
		answer.ClusterID = kmsg.StringPtr("cluster-x")
		b := kmsg.NewMetadataResponseBroker()
		b.NodeID, b.Host, b.Port = 3, "h", 9092
		answer.Brokers = append(answer.Brokers, b)
		go serveOne(t, server, "tester", answer)

		req := kmsg.NewPtrMetadataRequest()
		req.Version = version
		resp := kmsg.NewPtrMetadataResponse()
		if err := Exchange(client, "tester", 41, req, resp); err != nil {
			t.Fatalf("v%d: %v", version, err)
		}
		if resp.GetVersion() != version || len(resp.Brokers) != 1 || resp.Brokers[0].NodeID != 3 || resp.Brokers[0].Port != 9092 {
			t.Fatalf("v%d: response %+v", version, resp)
		}
		if version >= 2 && (resp.ClusterID == nil || *resp.ClusterID != "cluster-x") {
			t.Fatalf("v%d: cluster id %v", version, resp.ClusterID)
		}
		client.Close()
		server.Close()
	}
}

// TestExchangeWrongCorrelation: an answer to another request is an error, not a response.
func TestExchangeWrongCorrelation(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	go func() {
		var size [4]byte
		io.ReadFull(server, size[:])
		io.ReadFull(server, make([]byte, binary.BigEndian.Uint32(size[:])))
		resp := kmsg.NewPtrApiVersionsResponse()
		out := resp.AppendTo(kbin.AppendInt32([]byte{0, 0, 0, 0}, 99))
		binary.BigEndian.PutUint32(out, uint32(len(out)-4))
		server.Write(out)
	}()
	if err := Exchange(client, "tester", 1, kmsg.NewPtrApiVersionsRequest(), kmsg.NewPtrApiVersionsResponse()); err != errWrongCorrelation {
		t.Fatalf("got %v, want the wrong-correlation error", err)
	}
}
