package testcluster

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// WaitListening polls until addr accepts TCP connections, or ctx ends.
func WaitListening(ctx context.Context, addr string) error {
	for {
		conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			conn.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not accept connections: %w", addr, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// AllPartitionsLed is nil once every partition of every topic the broker knows has a leader (after
// a restart: once each has replayed and elected one).
func AllPartitionsLed(ctx context.Context, adm *kadm.Client) error {
	td, err := adm.ListTopics(ctx)
	if err != nil {
		return err
	}
	for _, t := range td {
		if t.Err != nil {
			return t.Err
		}
		for _, p := range t.Partitions {
			if p.Err != nil || p.Leader < 0 {
				return fmt.Errorf("%s/%d has no leader yet", t.Topic, p.Partition)
			}
		}
	}
	return nil
}

// Coordinator types of FindCoordinator.
const (
	GroupCoordinator       int8 = 0
	TransactionCoordinator int8 = 1
)

// FindCoordinator asks which node coordinates key: a group (GroupCoordinator) or a transactional
// id (TransactionCoordinator).
func FindCoordinator(ctx context.Context, r kmsg.Requestor, typ int8, key string) (int32, error) {
	req := kmsg.NewPtrFindCoordinatorRequest()
	req.CoordinatorType, req.CoordinatorKeys = typ, []string{key}
	resp, err := req.RequestWith(ctx, r)
	if err != nil {
		return -1, err
	}
	if len(resp.Coordinators) != 1 {
		return -1, fmt.Errorf("%d coordinators", len(resp.Coordinators))
	}
	if err := kerr.ErrorForCode(resp.Coordinators[0].ErrorCode); err != nil {
		return -1, err
	}
	return resp.Coordinators[0].NodeID, nil
}

// Produce sends one hand-built batch in a ProduceRequest (acks=all) to r (a
// kgo.Client, or one broker: its Broker(id)), and returns the partition's error code and the base offset it assigned.
func Produce(ctx context.Context, r kmsg.Requestor, topic string, partition int32, batch []byte) (code int16, baseOffset int64, err error) {
	id, err := TopicID(ctx, r, topic)
	if err != nil {
		return 0, 0, err
	}
	req := kmsg.NewPtrProduceRequest()
	req.Acks, req.TimeoutMillis = -1, 5000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic, rt.TopicID = topic, id // Produce v13+ names topics by id
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Partition, rp.Records = partition, batch
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, r)
	if err != nil {
		return 0, 0, err
	}
	p := resp.Topics[0].Partitions[0]
	return p.ErrorCode, p.BaseOffset, nil
}

// TopicID asks r for a topic's id (Metadata v10+), which Produce v13+ and Fetch v13+ name topics by.
// An unknown topic has the zero id (requests by it are answered UNKNOWN_TOPIC_ID).
func TopicID(ctx context.Context, r kmsg.Requestor, topic string) ([16]byte, error) {
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, r)
	if err != nil {
		return [16]byte{}, err
	}
	for _, t := range resp.Topics {
		if t.Topic != nil && *t.Topic == topic && t.ErrorCode == 0 {
			return t.TopicID, nil
		}
	}
	return [16]byte{}, nil
}
