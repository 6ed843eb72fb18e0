package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicebroker/sluice/batch"
	"github.com/sluicebroker/sluice/internal/kafkawire"
	"github.com/sluicebroker/sluice/replica"
	"github.com/sluicebroker/sluice/txn"
)

// Transaction markers: the coordinator's WriteMarkers writes them into the partitions this node
// leads directly, and sends them to the leaders of the others (WriteTxnMarkers).

// MarkerSender delivers transaction markers to partitions this node does not lead, by sending
// WriteTxnMarkers to their leaders. The default is a KafkaMarkerSender that finds leaders in the
// cluster metadata (partitionLeader); SetMarkerSender replaces it. Failed markers are retried by the
// coordinator.
type MarkerSender interface {
	SendMarkers(ctx context.Context, m Marker, parts []txn.TopicPartition) error
}

// Marker is one transaction marker to write.
type Marker struct {
	ProducerID       int64
	ProducerEpoch    int16
	CoordinatorEpoch int32
	Commit           bool
}

// SetMarkerSender sets the remote path of transaction markers.
func (b *Broker) SetMarkerSender(s MarkerSender) {
	b.txns.sender.Store(&s)
}

// txnMarkers writes markers: into partitions this node leads directly, through the MarkerSender
// for the others. The coordinator epoch is the leader epoch of the id's __transaction_state partition.
type txnMarkers struct{ b *Broker }

func (m txnMarkers) WriteMarkers(ctx context.Context, txnID string, pid int64, epoch int16, commit bool, parts []txn.TopicPartition) error {
	b := m.b
	mk := Marker{ProducerID: pid, ProducerEpoch: epoch, Commit: commit}
	// Only the leader of the id's partition writes markers, at its term: a deposed coordinator stops
	// here, and one that slips through is refused by the partitions (an older coordinator epoch).
	tpart, err := b.internalPartitionOf(txnTopic, txnID)
	if err != nil {
		return kerr.NotCoordinator
	}
	isLeader, _, term := tpart.Leader()
	if !isLeader {
		return kerr.NotCoordinator
	}
	mk.CoordinatorEpoch = term
	var remote []txn.TopicPartition
	var wg sync.WaitGroup
	errs := make([]error, len(parts))
	for i, tp := range parts {
		part, ok := b.replicas.Partition(tp.Topic, tp.Partition)
		if ok {
			ok, _, _ = part.Leader()
		}
		if !ok {
			if b.missingPartitionError(tp.Topic, tp.Partition) == kerr.UnknownTopicOrPartition {
				continue // deleted since: nothing to mark
			}
			remote = append(remote, tp)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = b.writeLocalMarker(ctx, part, mk)
		}()
	}
	wg.Wait()
	if len(remote) > 0 {
		var sender MarkerSender = &KafkaMarkerSender{Leader: b.leaderAddr, Auth: b.interBrokerAuth, TLS: b.interBrokerTLS()}
		if s := b.txns.sender.Load(); s != nil {
			sender = *s
		}
		errs = append(errs, sender.SendMarkers(ctx, mk, remote))
	}
	return errors.Join(errs...)
}

// writeLocalMarker writes one marker into a partition this node leads; a marker into
// __consumer_offsets also settles the producer's pending transactional offsets there.
func (b *Broker) writeLocalMarker(ctx context.Context, part *replica.Partition, mk Marker) error {
	if _, err := part.WriteMarker(ctx, mk.ProducerID, mk.ProducerEpoch, mk.CoordinatorEpoch, mk.Commit); err != nil {
		if errors.Is(err, kerr.InvalidProducerEpoch) {
			return nil // a newer epoch already wrote here: this transaction ended before
		}
		return err
	}
	if part.Topic() == offsetsTopic {
		if t, ok := b.ctl.Metadata().Topics[offsetsTopic]; ok {
			n, p := int32(len(t.Partitions)), part.Index()
			b.coordinator().CompleteTxn(mk.ProducerID, mk.Commit, func(g string) bool { return batch.PartitionFor(g, n) == p })
		}
	}
	return nil
}

// leaderAddr is the Kafka address of a partition's leader as known here (the default remote path of
// transaction markers).
func (b *Broker) leaderAddr(topic string, partition int32) (string, bool) {
	pm, ok := b.agent.PartitionMeta(topic, partition)
	if !ok {
		return "", false
	}
	leader, _ := b.agent.PartitionLeader(topic, pm)
	bi, ok := b.ctl.Metadata().Brokers[leader]
	if !ok || leader < 0 {
		return "", false
	}
	if bi.TLSPort > 0 && bi.TLSPort == bi.Port {
		return "tls://" + net.JoinHostPort(bi.Host, strconv.Itoa(int(bi.Port))), true // TLS only
	}
	return net.JoinHostPort(bi.Host, strconv.Itoa(int(bi.Port))), true
}

// KafkaMarkerSender is a MarkerSender that sends WriteTxnMarkers (API 27, v1) to each partition's
// leader over its Kafka listener, one connection per request (markers are rare: two per transaction
// and partition led elsewhere).
type KafkaMarkerSender struct {
	// Leader returns the Kafka address (host:port) of the partition's current leader.
	Leader func(topic string, partition int32) (addr string, ok bool)
	// TLS is the client configuration for leaders whose address is "tls://host:port" (TLS only).
	TLS *tls.Config
	// Auth, when set, authenticates each new connection first (SASL: security.go).
	Auth func(ctx context.Context, roundTrip func(kmsg.Request, kmsg.Response) error) error

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
	addr, useTLS := strings.CutPrefix(addr, "tls://")
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	if useTLS {
		if s.TLS == nil {
			conn.Close()
			return fmt.Errorf("%s listens with TLS only and this broker has no inter-broker TLS (--raft-tls-*)", addr)
		}
		conf := s.TLS.Clone()
		conf.ServerName, _, _ = net.SplitHostPort(addr)
		tc := tls.Client(conn, conf)
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return fmt.Errorf("TLS to %s: %w", addr, err)
		}
		conn = tc
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if s.Auth != nil {
		if err := s.Auth(ctx, func(req kmsg.Request, resp kmsg.Response) error { return s.exchange(conn, req, resp) }); err != nil {
			return fmt.Errorf("authenticating to %s: %w", addr, err)
		}
	}
	return s.exchange(conn, req, resp)
}

// exchange writes one request on conn and reads its response.
func (s *KafkaMarkerSender) exchange(conn net.Conn, req kmsg.Request, resp kmsg.Response) error {
	return kafkawire.Exchange(conn, "sluice-txn-coordinator", s.corr.Add(1), req, resp)
}
