package broker

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicebroker/sluice/batch"
	"github.com/sluicebroker/sluice/metrics"
	"github.com/sluicebroker/sluice/replica"
	"github.com/sluicebroker/sluice/segment"
)

func init() {
	// Produce is served from v3 (record batch v2 only) but advertised from v0, as Kafka 4.0 does
	// (KAFKA-18659): librdkafka turns gzip, snappy and lz4 off without a word unless the broker lists
	// Produce v0 (its codec check asks for Produce within [0, 0]); v0-2 are answered
	// UNSUPPORTED_VERSION (handleProduce). v13 names topics by id (KIP-516). The range must include
	// 7 (kafka-go). Served on the event loop by HandleRequest (proposals keep the connection's order).
	register(kmsg.Produce, 0, 13, nil)
}

// defaultProduceTimeout bounds a produce whose request gives no usable timeout.
const defaultProduceTimeout = 30 * time.Second

// handleProduce validates each partition's batch (header and CRC, never decompressing) and hands the
// valid ones to their partitions' Raft groups, then answers once every one is committed. It runs on the
// connection's event loop, not a goroutine: requests of one connection must reach Raft in the order
// they arrived, or an idempotent producer's pipelined batches would land out of sequence. Proposing
// does not block; the answer is sent from the last completion.
func (b *Broker) handleProduce(c *call, req *kmsg.ProduceRequest) {
	resp := req.ResponseKind().(*kmsg.ProduceResponse)
	if req.Version < minServedProduceVersion {
		b.refuseOldProduce(c, req, resp)
		return
	}
	timeout := time.Duration(req.TimeoutMillis) * time.Millisecond
	if timeout <= 0 {
		timeout = defaultProduceTimeout
	}
	var pending atomic.Int32
	pending.Store(1) // this function's own hold, released after the last proposal is made
	size := len(c.nr.Frame) + 4
	finish := func() {
		if pending.Add(-1) != 0 {
			return
		}
		resp.ThrottleMillis = b.throttleProduce(c, size) // client quotas (throttle.go)
		if req.Acks == 0 {
			c.nr.Skip()
			return
		}
		b.respond(c.nr, c.hdr, resp)
	}
	resp.Topics = make([]kmsg.ProduceResponseTopic, len(req.Topics))
	for i := range req.Topics {
		rt := &req.Topics[i]
		st := &resp.Topics[i]
		*st = kmsg.NewProduceResponseTopic()
		st.Topic, st.TopicID = rt.Topic, rt.TopicID
		topic, known := rt.Topic, true
		if req.Version >= 13 { // topics named by id (KIP-516)
			topic, known = b.topicIDs.name(b.ctl.Metadata(), rt.TopicID)
		}
		st.Partitions = make([]kmsg.ProduceResponseTopicPartition, len(rt.Partitions))
		for j := range rt.Partitions {
			rp := &rt.Partitions[j]
			sp := &st.Partitions[j]
			*sp = kmsg.NewProduceResponseTopicPartition()
			sp.Partition = rp.Partition
			var part *replica.Partition
			var records []byte
			err := error(kerr.UnknownTopicID)
			if known {
				if code := b.authorizeProduce(c, req, topic); code != 0 {
					sp.ErrorCode = code
					continue
				}
				part, records, err = b.validateProduce(req, topic, rp.Partition, rp.Records)
			}
			if err != nil {
				sp.ErrorCode = errorCode(err)
				sp.ErrorMessage = errorMessage(err)
				metrics.PartitionError(produceKey, sp.ErrorCode)
				continue
			}
			pending.Add(1)
			part.ProduceAsync(records, timeout, func(res replica.ProduceResult, err error) {
				if err != nil {
					sp.ErrorCode = errorCode(err)
					metrics.PartitionError(produceKey, sp.ErrorCode)
				} else {
					countProduced(topic, records)
					sp.BaseOffset = res.BaseOffset
					sp.LogAppendTime = res.LogAppendTime
					sp.LogStartOffset = res.LogStartOffset
				}
				finish()
			})
		}
	}
	finish()
}

// minServedProduceVersion is the first Produce version served: v3 carries record batch v2, the
// only format the log stores.
const minServedProduceVersion = 3

// refuseOldProduce answers a Produce v0-2 (advertised only for librdkafka's feature checks) with
// UNSUPPORTED_VERSION on every partition, as Kafka 4.0 does. An acks=0 request has no response to
// carry the error, so its connection is closed, as Kafka does on a failed acks=0 produce.
func (b *Broker) refuseOldProduce(c *call, req *kmsg.ProduceRequest, resp *kmsg.ProduceResponse) {
	if req.Acks == 0 {
		c.nr.CloseConn(fmt.Sprintf("client %q: Produce v%d is not supported (record batch v2 needs v3+)", c.hdr.clientID, req.Version))
		return
	}
	resp.Topics = make([]kmsg.ProduceResponseTopic, len(req.Topics))
	for i, rt := range req.Topics {
		st := &resp.Topics[i]
		*st = kmsg.NewProduceResponseTopic()
		st.Topic = rt.Topic
		st.Partitions = make([]kmsg.ProduceResponseTopicPartition, len(rt.Partitions))
		for j, rp := range rt.Partitions {
			sp := &st.Partitions[j]
			*sp = kmsg.NewProduceResponseTopicPartition()
			sp.Partition = rp.Partition
			sp.ErrorCode = kerr.UnsupportedVersion.Code
			sp.BaseOffset = -1
		}
	}
	b.respond(c.nr, c.hdr, resp)
}

// Produce validation errors, with the Kafka code each maps to.
var (
	errNoRecords       = kerr.InvalidRecord
	errMultipleBatches = kerr.InvalidRecord
	errControlBatch    = kerr.InvalidRecord
	errNoSequence      = kerr.InvalidRecord
	errNullKey         = kerr.InvalidRecord // a record without a key in a compacted topic
)

// validateProduce finds the partition and checks one batch as Kafka does, without decoding records. It
// returns the batch to store: the client's bytes, or (when the topic's compression.type names another
// codec than the producer's) the batch recompressed.
func (b *Broker) validateProduce(req *kmsg.ProduceRequest, topic string, partition int32, records []byte) (*replica.Partition, []byte, error) {
	part, ok := b.replicas.Partition(topic, partition)
	if !ok {
		return nil, nil, b.missingPartitionError(topic, partition)
	}
	if isLeader, _, _ := part.Leader(); !isLeader {
		// Before the checks below, as Kafka does: a follower's answer sends the client to the
		// leader rather than reporting this node's state (its disk, its view of the ISR).
		return nil, nil, kerr.NotLeaderForPartition
	}
	if len(records) == 0 {
		return nil, nil, errNoRecords
	}
	if int64(len(records)) > int64(part.MaxMessageBytes()) {
		return nil, nil, kerr.MessageTooLarge
	}
	h, err := segment.ParseHeader(records)
	if err != nil {
		return nil, nil, err
	}
	if h.Size() < len(records) {
		// Produce v3+ carries exactly one batch per partition.
		return nil, nil, errMultipleBatches
	}
	if h, err = segment.Validate(records); err != nil {
		return nil, nil, err
	}
	switch {
	case h.RecordCount <= 0:
		return nil, nil, errNoRecords
	case h.IsControl():
		return nil, nil, errControlBatch
	case h.ProducerID >= 0 && h.BaseSequence < 0:
		return nil, nil, errNoSequence
	case h.IsTransactional() && h.ProducerID < 0:
		return nil, nil, errNoSequence
	case h.IsTransactional():
		if err := b.verifyTxnProduce(req.TransactionID, topic, partition, h.ProducerID, h.ProducerEpoch); err != nil {
			return nil, nil, err
		}
	}
	if part.Compact() {
		if err := refuseNullKeys(records); err != nil {
			return nil, nil, err
		}
	}
	if codec := part.Compression(); codec != replica.CompressionProducer && codec != h.Compression() {
		if records, err = recompress(records, codec); err != nil {
			return nil, nil, err
		}
		if int64(len(records)) > int64(part.MaxMessageBytes()) {
			return nil, nil, kerr.MessageTooLarge
		}
	}
	if req.Acks == -1 && !b.agent.EnoughInSync(part) {
		return nil, nil, kerr.NotEnoughReplicas
	}
	if err := b.cfg.Disk.admitWrite(len(records)); err != nil {
		return nil, nil, err
	}
	if id, low := b.agent.ReplicaDiskLow(part); low {
		return nil, nil, &errReplicaDiskLow{broker: id}
	}
	return part, records, nil
}

// refuseNullKeys answers INVALID_RECORD for a batch with a record without a key, as Kafka does on
// a compacted topic (the whole batch is refused). A compressed batch is decompressed into a pooled
// buffer; records are walked in place, nothing allocated per record.
func refuseNullKeys(records []byte) error {
	scratch := recompressScratch.Get().(*[]byte)
	null, err := batch.HasNullKey(records, scratch)
	if cap(*scratch) > 8<<20 {
		*scratch = nil
	}
	recompressScratch.Put(scratch)
	switch {
	case err != nil:
		return fmt.Errorf("%w: %v", segment.ErrCorrupt, err)
	case null:
		return errNullKey
	}
	return nil
}

// recompressScratch holds decompressed records between recompressions (one per batch in flight).
var recompressScratch = sync.Pool{New: func() any { return new([]byte) }}

// recompress returns the batch with its records compressed with codec: Kafka's compression.type on a
// topic, for producers an operator does not control. It runs on the connection's event loop like the
// rest of produce validation (the order of a connection's batches into Raft must hold); it is opt-in
// per topic and costs per batch what the codec costs (results/2026-12-07-2core-vm-suites/). The new
// batch is one allocation per batch; nothing is allocated per record.
func recompress(records []byte, codec int8) ([]byte, error) {
	scratch := recompressScratch.Get().(*[]byte)
	out, err := batch.Recompress(make([]byte, 0, len(records)), records, codec, scratch)
	if cap(*scratch) > 8<<20 {
		*scratch = nil // do not pin a huge batch's buffer in the pool
	}
	recompressScratch.Put(scratch)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", segment.ErrCorrupt, err)
	}
	return out, nil
}

// missingPartitionError tells an unknown topic or partition from one this broker does not host.
func (b *Broker) missingPartitionError(topic string, partition int32) error {
	md := b.ctl.Metadata()
	t, ok := md.Topics[topic]
	if !ok || partition < 0 || int(partition) >= len(t.Partitions) {
		return kerr.UnknownTopicOrPartition
	}
	return kerr.NotLeaderForPartition
}
