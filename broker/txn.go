package broker

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/sluicebroker/sluice/batch"
	"github.com/sluicebroker/sluice/txn"
)

// The transaction coordinator of a transactional id is the leader of its __transaction_state
// partition, as for groups (internal.go: creation, loading). Its state is loaded by replaying the
// partition when this node leads it: on the first request, and in the background (txnLoader) so that
// transactions left open or half ended by a crash are finished after a restart without waiting for
// their producer. Markers: markers.go; the APIs: txn_handlers.go.

const (
	txnTopic      = "__transaction_state"
	txnPartitions = 3
)

// txnState is the broker's side of the transaction coordinator.
type txnState struct {
	once   sync.Once
	coord  *txn.Coordinator
	ready  atomic.Pointer[txn.Coordinator] // coord once created, for the produce path (no once, no lock)
	topic  internalTopic                   // __transaction_state
	sender atomic.Pointer[MarkerSender]    // not under topic.mu: loads hold it for a whole replay
}

func (b *Broker) txnCoordinator() *txn.Coordinator {
	b.txns.once.Do(func() {
		b.txns.coord = txn.New(txn.Config{
			MaxTimeout: b.cfg.TransactionMaxTimeout,
			AllocateID: b.pids.allocate,
			Logf:       func(f string, args ...any) { b.log.Warn("transaction coordinator: " + fmt.Sprintf(f, args...)) },
		}, txnStore{b}, txnMarkers{b})
		b.txns.ready.Store(b.txns.coord)
		b.closeOnShutdown(b.txns.coord.Close)
	})
	return b.txns.coord
}

// txnStore appends the coordinator's records to the transactional id's partition through Raft.
type txnStore struct{ b *Broker }

func (s txnStore) Append(ctx context.Context, txnID string, recs []txn.Record) error {
	return s.b.appendInternal(ctx, txnTopic, txnID, batch.Encode(recs, time.Now().UnixMilli(), 0, batch.NoProducer))
}

// txnReady checks this node coordinates txnID and its partition is loaded: 0 or the error code.
func (b *Broker) txnReady(ctx context.Context, txnID string) int16 {
	if txnID == "" {
		return kerr.InvalidRequest.Code
	}
	return b.coordinatorReady(ctx, &b.txns.topic, b.txnCoordinator(), txnID)
}

// txnLoader loads every __transaction_state partition this node leads, soon after start-up and
// after leadership changes, so that the coordinator's timers end what a crash left open.
func (b *Broker) txnLoader() {
	defer b.wg.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-tick.C:
		}
		t, ok := b.internalTopicMeta(b.ctx, &b.txns.topic, false)
		if !ok {
			continue
		}
		n := int32(len(t.Partitions))
		for p := range n {
			part, ok := b.replicas.Partition(txnTopic, p)
			if !ok {
				continue
			}
			if isLeader, _, _ := part.Leader(); isLeader || b.txns.topic.isLoaded(p) {
				b.loadInternalPartition(b.ctx, &b.txns.topic, b.txnCoordinator(), p, n)
			}
		}
	}
}

// verifyTxnProduce checks a transactional batch against the coordinator's view when this node
// coordinates the id (Kafka's KIP-890 verification, done locally): a zombie of an older epoch cannot
// write into a partition its transaction never added, and no batch lands outside an open
// transaction. It never blocks: an id this node does not hold passes.
func (b *Broker) verifyTxnProduce(txnID *string, topic string, partition int32, pid int64, epoch int16) error {
	c := b.txns.ready.Load()
	if c == nil || txnID == nil {
		return nil
	}
	code, known := c.VerifyProduce(*txnID, pid, epoch, txn.TopicPartition{Topic: topic, Partition: partition})
	if !known || code == 0 {
		return nil
	}
	return kerr.ErrorForCode(code)
}

// producerFenced is PRODUCER_FENCED, or INVALID_PRODUCER_EPOCH for versions before it existed.
func producerFenced(code int16, fencedSince, version int16) int16 {
	if code == kerr.ProducerFenced.Code && version < fencedSince {
		return kerr.InvalidProducerEpoch.Code
	}
	return code
}
