package broker

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicebroker/sluice/txn"
)

// KafkaMarkerSender is a MarkerSender that sends WriteTxnMarkers (API 27, v1) to each partition's
// leader over its Kafka listener, one connection per request (markers are rare: two per transaction
// and partition led elsewhere).
type KafkaMarkerSender struct {
	// Leader returns the Kafka address (host:port) of the partition's current leader.
	Leader func(topic string, partition int32) (addr string, ok bool)

	corr atomic.Int32
}

// SendMarkers groups parts by leader and writes the marker into each; any partition error fails the
// whole call (the coordinator retries every partition, and markers are idempotent enough: a repeated
// marker finds no open transaction and changes nothing).
func (s *KafkaMarkerSender) SendMarkers(ctx context.Context, m Marker, parts []txn.TopicPartition) error {
	byAddr := map[string][]txn.TopicPartition{}
	for _, tp := range parts {
		addr, ok := s.Leader(tp.Topic, tp.Partition)
		if !ok {
			return fmt.Errorf("%s/%d: %w", tp.Topic, tp.Partition, kerr.LeaderNotAvailable)
		}
		byAddr[addr] = append(byAddr[addr], tp)
	}
	var errs []error
	for addr, tps := range byAddr {
		req := kmsg.NewPtrWriteTxnMarkersRequest()
		req.Version = 1
		rm := kmsg.NewWriteTxnMarkersRequestMarker()
		rm.ProducerID, rm.ProducerEpoch, rm.Committed, rm.CoordinatorEpoch = m.ProducerID, m.ProducerEpoch, m.Commit, m.CoordinatorEpoch
		for _, tp := range tps {
			if n := len(rm.Topics); n == 0 || rm.Topics[n-1].Topic != tp.Topic {
				t := kmsg.NewWriteTxnMarkersRequestMarkerTopic()
				t.Topic = tp.Topic
				rm.Topics = append(rm.Topics, t)
			}
			t := &rm.Topics[len(rm.Topics)-1]
			t.Partitions = append(t.Partitions, tp.Partition)
		}
		req.Markers = append(req.Markers, rm)
		resp := kmsg.NewPtrWriteTxnMarkersResponse()
		if err := s.roundTrip(ctx, addr, req, resp); err != nil {
			errs = append(errs, fmt.Errorf("WriteTxnMarkers to %s: %w", addr, err))
			continue
		}
		for _, mr := range resp.Markers {
			for _, t := range mr.Topics {
				for _, p := range t.Partitions {
					if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
						errs = append(errs, fmt.Errorf("%s/%d: %w", t.Topic, p.Partition, err))
					}
				}
			}
		}
	}
	return errors.Join(errs...)
}

// roundTrip sends one request on a new connection and decodes its response.
func (s *KafkaMarkerSender) roundTrip(ctx context.Context, addr string, req kmsg.Request, resp kmsg.Response) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	corr := s.corr.Add(1)
	buf := []byte{0, 0, 0, 0}
	buf = kbin.AppendInt16(buf, req.Key())
	buf = kbin.AppendInt16(buf, req.GetVersion())
	buf = kbin.AppendInt32(buf, corr)
	buf = kbin.AppendString(buf, "sluice-txn-coordinator")
	if req.IsFlexible() {
		buf = append(buf, 0)
	}
	buf = req.AppendTo(buf)
	binary.BigEndian.PutUint32(buf, uint32(len(buf)-4))
	if _, err := conn.Write(buf); err != nil {
		return err
	}
	var size [4]byte
	if _, err := io.ReadFull(conn, size[:]); err != nil {
		return err
	}
	body := make([]byte, binary.BigEndian.Uint32(size[:]))
	if _, err := io.ReadFull(conn, body); err != nil {
		return err
	}
	if len(body) < 4 || int32(binary.BigEndian.Uint32(body)) != corr {
		return errors.New("response with a wrong correlation id")
	}
	body = body[4:]
	if req.IsFlexible() {
		r := kbin.Reader{Src: body}
		kmsg.SkipTags(&r)
		body = r.Src
	}
	resp.SetVersion(req.GetVersion())
	return resp.ReadFrom(body)
}
