package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicebroker/sluice/batch"
	"github.com/sluicebroker/sluice/group"
	"github.com/sluicebroker/sluice/replica"
	"github.com/sluicebroker/sluice/txn"
)

// The transaction coordinator of a transactional id is the leader of its __transaction_state
// partition, as for groups. Its state is loaded by replaying the partition when this node leads it:
// on the first request, and in the background (txnLoader) so that transactions left open or half
// ended by a crash are finished after a restart without waiting for their producer.

const (
	txnTopic      = "__transaction_state"
	txnPartitions = 3
)

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

// txnState is the broker's side of the transaction coordinator.
type txnState struct {
	once   sync.Once
	coord  *txn.Coordinator
	ready  atomic.Pointer[txn.Coordinator] // coord once created, for the produce path (no once, no lock)
	mu     sync.Mutex                      // serialises loads
	loaded map[int32]int32
	sender atomic.Pointer[MarkerSender] // not under mu: loads hold mu for a whole replay
}

func (b *Broker) txnCoordinator() *txn.Coordinator {
	b.txns.once.Do(func() {
		b.txns.mu.Lock()
		b.txns.loaded = map[int32]int32{}
		b.txns.mu.Unlock()
		b.txns.coord = txn.New(txn.Config{
			MaxTimeout: b.cfg.TransactionMaxTimeout,
			AllocateID: b.pids.allocate,
			Logf:       func(f string, args ...any) { b.log.Warn("transaction coordinator: " + fmt.Sprintf(f, args...)) },
		}, txnStore{b}, txnMarkers{b})
		b.txns.ready.Store(b.txns.coord)
		go func() {
			<-b.ctx.Done()
			b.txns.coord.Close()
		}()
	})
	return b.txns.coord
}

// txnStore appends the coordinator's records to the transactional id's partition through Raft.
type txnStore struct{ b *Broker }

func (s txnStore) Append(ctx context.Context, txnID string, recs []txn.Record) error {
	return s.b.appendInternal(ctx, txnTopic, func(n int32) int32 { return batch.PartitionFor(txnID, n) },
		batch.Encode(recs, time.Now().UnixMilli(), 0, batch.NoProducer))
}

// AppendTxn writes a group's transactional offsets as a transactional batch of the producer.
func (s offsetsStore) AppendTxn(ctx context.Context, groupID string, pid int64, epoch int16, recs []group.Record) error {
	b := s.b
	t, ok := b.ctl.Metadata().Topics[offsetsTopic]
	if !ok {
		return kerr.CoordinatorNotAvailable
	}
	part, ok := b.replicas.Partition(offsetsTopic, batch.PartitionFor(groupID, int32(len(t.Partitions))))
	if !ok {
		return kerr.NotCoordinator
	}
	ctx, cancel := context.WithTimeout(ctx, offsetsTimeout)
	defer cancel()
	_, err := part.Produce(ctx, batch.Encode(recs, time.Now().UnixMilli(), batch.AttrTransactional, batch.Producer{ID: pid, Epoch: epoch, BaseSequence: -1}))
	if errors.Is(err, kerr.InvalidProducerEpoch) {
		return kerr.ProducerFenced
	}
	return coordinatorError(err)
}

// txnMarkers writes markers: into partitions this node leads directly, through the MarkerSender
// for the others. The coordinator epoch is the leader epoch of the id's __transaction_state partition.
type txnMarkers struct{ b *Broker }

func (m txnMarkers) WriteMarkers(ctx context.Context, txnID string, pid int64, epoch int16, commit bool, parts []txn.TopicPartition) error {
	b := m.b
	mk := Marker{ProducerID: pid, ProducerEpoch: epoch, Commit: commit}
	// Only the leader of the id's partition writes markers, at its term: a deposed coordinator stops
	// here, and one that slips through is refused by the partitions (an older coordinator epoch).
	t, ok := b.ctl.Metadata().Topics[txnTopic]
	if !ok {
		return kerr.NotCoordinator
	}
	tpart, ok := b.replicas.Partition(txnTopic, batch.PartitionFor(txnID, int32(len(t.Partitions))))
	if !ok {
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
		var sender MarkerSender = &KafkaMarkerSender{Leader: b.leaderAddr}
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
	pm, ok := b.partitionMeta(topic, partition)
	if !ok {
		return "", false
	}
	leader, _ := b.partitionLeader(topic, pm)
	bi, ok := b.ctl.Metadata().Brokers[leader]
	if !ok || leader < 0 {
		return "", false
	}
	return net.JoinHostPort(bi.Host, strconv.Itoa(int(bi.Port))), true
}

// txnReady checks this node coordinates txnID and its partition is loaded: 0 or the error code.
func (b *Broker) txnReady(ctx context.Context, txnID string) int16 {
	if txnID == "" {
		return kerr.InvalidRequest.Code
	}
	t, ok := b.txnTopicMeta(ctx, true)
	if !ok {
		return kerr.CoordinatorNotAvailable.Code
	}
	n := int32(len(t.Partitions))
	return b.loadTxnPartition(ctx, batch.PartitionFor(txnID, n), n)
}

// loadTxnPartition makes sure this node leads partition p of __transaction_state and has replayed it.
func (b *Broker) loadTxnPartition(ctx context.Context, p, n int32) int16 {
	c := b.txnCoordinator()
	if pm, ok := b.partitionMeta(txnTopic, p); ok && !containsInt32(pm.Replicas, b.cfg.NodeID) {
		return kerr.NotCoordinator.Code // hosted elsewhere: the client asks FindCoordinator again
	}
	part, ok := b.internalPartitionLed(ctx, txnTopic, p)
	if !ok {
		return kerr.CoordinatorNotAvailable.Code
	}
	isLeader, _, epoch := part.Leader()
	inP := func(id string) bool { return batch.PartitionFor(id, n) == p }
	b.txns.mu.Lock()
	defer b.txns.mu.Unlock()
	if !isLeader {
		if _, ok := b.txns.loaded[p]; ok {
			delete(b.txns.loaded, p)
			c.Unload(inP)
		}
		return kerr.NotCoordinator.Code
	}
	if e, ok := b.txns.loaded[p]; ok && e == epoch {
		return 0
	}
	c.Unload(inP)
	if err := b.replayTxns(ctx, c, part); err != nil {
		b.log.Warn("loading __transaction_state failed", "partition", p, "err", err)
		return kerr.CoordinatorLoadInProgress.Code
	}
	b.txns.loaded[p] = epoch
	return 0
}

// replayTxns writes an empty marker record so that everything committed before it is applied, then
// replays the partition up to it.
func (b *Broker) replayTxns(ctx context.Context, c *txn.Coordinator, part *replica.Partition) error {
	ctx, cancel := context.WithTimeout(ctx, offsetsTimeout)
	defer cancel()
	res, err := part.Produce(ctx, batch.Encode([]batch.Record{{}}, time.Now().UnixMilli(), 0, batch.NoProducer))
	if err != nil {
		return err
	}
	for off := part.LogStartOffset(); off < res.BaseOffset; {
		r, err := part.Read(off, 1<<20)
		if err != nil {
			return err
		}
		buf, err := r.AppendTo(nil)
		r.Release()
		if err != nil {
			return err
		}
		next, err := c.ReplayBatches(buf)
		if err != nil {
			return err
		}
		if next <= off {
			return errors.New("no progress reading __transaction_state")
		}
		off = next
	}
	return nil
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
		t, ok := b.txnTopicMeta(b.ctx, false)
		if !ok {
			continue
		}
		n := int32(len(t.Partitions))
		for p := range n {
			part, ok := b.replicas.Partition(txnTopic, p)
			if !ok {
				continue
			}
			b.txns.mu.Lock()
			_, loaded := b.txns.loaded[p]
			b.txns.mu.Unlock()
			if isLeader, _, _ := part.Leader(); isLeader || loaded {
				b.loadTxnPartition(b.ctx, p, n)
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

func (b *Broker) handleInitTransactional(req *kmsg.InitProducerIDRequest, resp *kmsg.InitProducerIDResponse) kmsg.Response {
	ctx, cancel := b.requestContext(0)
	defer cancel()
	if code := b.txnReady(ctx, *req.TransactionalID); code != 0 {
		resp.ErrorCode = code
		return resp
	}
	pid, epoch, code := b.txnCoordinator().InitProducerID(ctx, *req.TransactionalID, req.TransactionTimeoutMillis, req.ProducerID, req.ProducerEpoch)
	resp.ProducerID, resp.ProducerEpoch, resp.ErrorCode = pid, epoch, producerFenced(code, 4, req.Version)
	return resp
}

func (b *Broker) handleAddPartitionsToTxn(req *kmsg.AddPartitionsToTxnRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.AddPartitionsToTxnResponse)
	ctx, cancel := b.requestContext(0)
	defer cancel()
	one := func(id string, pid int64, epoch int16, verify bool, parts []txn.TopicPartition) int16 {
		if code := b.txnReady(ctx, id); code != 0 {
			return code
		}
		for _, tp := range parts {
			if code := errorCode(b.missingPartitionError(tp.Topic, tp.Partition)); code == kerr.UnknownTopicOrPartition.Code {
				return code
			}
		}
		if verify {
			return b.txnCoordinator().Verify(id, pid, epoch, parts)
		}
		return producerFenced(b.txnCoordinator().AddPartitions(ctx, id, pid, epoch, parts), 2, req.Version)
	}
	if req.Version < 4 {
		var parts []txn.TopicPartition
		for _, t := range req.Topics {
			for _, p := range t.Partitions {
				parts = append(parts, txn.TopicPartition{Topic: t.Topic, Partition: p})
			}
		}
		code := one(req.TransactionalID, req.ProducerID, req.ProducerEpoch, false, parts)
		for _, t := range req.Topics {
			rt := kmsg.NewAddPartitionsToTxnResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewAddPartitionsToTxnResponseTopicPartition()
				rp.Partition, rp.ErrorCode = p, code
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		return resp
	}
	for _, rtx := range req.Transactions {
		var parts []txn.TopicPartition
		for _, t := range rtx.Topics {
			for _, p := range t.Partitions {
				parts = append(parts, txn.TopicPartition{Topic: t.Topic, Partition: p})
			}
		}
		code := one(rtx.TransactionalID, rtx.ProducerID, rtx.ProducerEpoch, rtx.VerifyOnly, parts)
		st := kmsg.NewAddPartitionsToTxnResponseTransaction()
		st.TransactionalID = rtx.TransactionalID
		for _, t := range rtx.Topics {
			rt := kmsg.NewAddPartitionsToTxnResponseTransactionTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewAddPartitionsToTxnResponseTransactionTopicPartition()
				rp.Partition, rp.ErrorCode = p, code
				rt.Partitions = append(rt.Partitions, rp)
			}
			st.Topics = append(st.Topics, rt)
		}
		resp.Transactions = append(resp.Transactions, st)
	}
	return resp
}

func (b *Broker) handleAddOffsetsToTxn(req *kmsg.AddOffsetsToTxnRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.AddOffsetsToTxnResponse)
	ctx, cancel := b.requestContext(0)
	defer cancel()
	if resp.ErrorCode = b.txnReady(ctx, req.TransactionalID); resp.ErrorCode != 0 {
		return resp
	}
	t, ok := b.offsetsTopicMeta(ctx, true)
	if !ok {
		resp.ErrorCode = kerr.CoordinatorNotAvailable.Code
		return resp
	}
	tp := txn.TopicPartition{Topic: offsetsTopic, Partition: batch.PartitionFor(req.Group, int32(len(t.Partitions)))}
	code := b.txnCoordinator().AddPartitions(ctx, req.TransactionalID, req.ProducerID, req.ProducerEpoch, []txn.TopicPartition{tp})
	resp.ErrorCode = producerFenced(code, 2, req.Version)
	return resp
}

func (b *Broker) handleEndTxn(req *kmsg.EndTxnRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.EndTxnResponse)
	ctx, cancel := b.requestContext(0)
	defer cancel()
	if resp.ErrorCode = b.txnReady(ctx, req.TransactionalID); resp.ErrorCode != 0 {
		return resp
	}
	code := b.txnCoordinator().EndTxn(ctx, req.TransactionalID, req.ProducerID, req.ProducerEpoch, req.Commit)
	resp.ErrorCode = producerFenced(code, 2, req.Version)
	return resp
}

func (b *Broker) handleTxnOffsetCommit(req *kmsg.TxnOffsetCommitRequest) kmsg.Response {
	if code := b.groupReady(b.ctx, req.Group); code != 0 {
		resp := req.ResponseKind().(*kmsg.TxnOffsetCommitResponse)
		for _, t := range req.Topics {
			rt := kmsg.NewTxnOffsetCommitResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewTxnOffsetCommitResponseTopicPartition()
				rp.Partition, rp.ErrorCode = p.Partition, code
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		return resp
	}
	return b.coordinator().TxnOffsetCommit(b.ctx, req)
}

// handleWriteTxnMarkers writes markers sent by the coordinator of another node into the partitions
// this node leads.
func (b *Broker) handleWriteTxnMarkers(req *kmsg.WriteTxnMarkersRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.WriteTxnMarkersResponse)
	ctx, cancel := b.requestContext(0)
	defer cancel()
	for _, m := range req.Markers {
		rm := kmsg.NewWriteTxnMarkersResponseMarker()
		rm.ProducerID = m.ProducerID
		mk := Marker{ProducerID: m.ProducerID, ProducerEpoch: m.ProducerEpoch, CoordinatorEpoch: m.CoordinatorEpoch, Commit: m.Committed}
		for _, t := range m.Topics {
			rt := kmsg.NewWriteTxnMarkersResponseMarkerTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewWriteTxnMarkersResponseMarkerTopicPartition()
				rp.Partition = p
				part, ok := b.replicas.Partition(t.Topic, p)
				switch {
				case !ok:
					rp.ErrorCode = errorCode(b.missingPartitionError(t.Topic, p))
				default:
					rp.ErrorCode = errorCode(b.writeLocalMarker(ctx, part, mk))
				}
				rt.Partitions = append(rt.Partitions, rp)
			}
			rm.Topics = append(rm.Topics, rt)
		}
		resp.Markers = append(resp.Markers, rm)
	}
	return resp
}

func (b *Broker) handleDescribeTransactions(req *kmsg.DescribeTransactionsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.DescribeTransactionsResponse)
	ctx, cancel := b.requestContext(0)
	defer cancel()
	for _, id := range req.TransactionalIDs {
		st := kmsg.NewDescribeTransactionsResponseTransactionState()
		st.TransactionalID = id
		st.ProducerID, st.ProducerEpoch, st.StartTimestamp = -1, -1, -1
		if st.ErrorCode = b.txnReady(ctx, id); st.ErrorCode == 0 {
			info, ok := b.txnCoordinator().Describe(id)
			if !ok {
				st.ErrorCode = kerr.TransactionalIDNotFound.Code
			} else {
				fillTxnState(&st, info)
			}
		}
		resp.TransactionStates = append(resp.TransactionStates, st)
	}
	return resp
}

func fillTxnState(st *kmsg.DescribeTransactionsResponseTransactionState, info txn.Info) {
	st.State, st.TimeoutMillis, st.ProducerID, st.ProducerEpoch = info.State.String(), info.TimeoutMs, info.PID, info.Epoch
	if !info.Start.IsZero() {
		st.StartTimestamp = info.Start.UnixMilli()
	}
	for _, tp := range info.Parts {
		if n := len(st.Topics); n == 0 || st.Topics[n-1].Topic != tp.Topic {
			t := kmsg.NewDescribeTransactionsResponseTransactionStateTopic()
			t.Topic = tp.Topic
			st.Topics = append(st.Topics, t)
		}
		t := &st.Topics[len(st.Topics)-1]
		t.Partitions = append(t.Partitions, tp.Partition)
	}
}

func (b *Broker) handleListTransactions(req *kmsg.ListTransactionsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.ListTransactionsResponse)
	resp.TransactionStates = []kmsg.ListTransactionsResponseTransactionState{}
	if t, ok := b.txnTopicMeta(b.ctx, false); ok {
		n := int32(len(t.Partitions))
		for p := range n {
			if part, ok := b.replicas.Partition(txnTopic, p); ok {
				if isLeader, _, _ := part.Leader(); isLeader {
					b.loadTxnPartition(b.ctx, p, n)
				}
			}
		}
	} else {
		return resp
	}
	states := map[string]bool{}
	for _, s := range req.StateFilters {
		if _, err := kmsg.ParseTransactionState(s); err != nil {
			resp.UnknownStateFilters = append(resp.UnknownStateFilters, s)
			continue
		}
		states[s] = true
	}
	pids := map[int64]bool{}
	for _, p := range req.ProducerIDFilters {
		pids[p] = true
	}
	now := time.Now()
	for _, info := range b.txnCoordinator().List() {
		if len(req.StateFilters) > 0 && !states[info.State.String()] || len(pids) > 0 && !pids[info.PID] {
			continue
		}
		// v1: only transactions running longer than DurationFilterMillis.
		if req.Version >= 1 && req.DurationFilterMillis >= 0 && (info.Start.IsZero() || now.Sub(info.Start).Milliseconds() < req.DurationFilterMillis) {
			continue
		}
		st := kmsg.NewListTransactionsResponseTransactionState()
		st.TransactionalID, st.ProducerID, st.TransactionState = info.ID, info.PID, info.State.String()
		resp.TransactionStates = append(resp.TransactionStates, st)
	}
	return resp
}

func (b *Broker) handleDescribeProducers(req *kmsg.DescribeProducersRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.DescribeProducersResponse)
	for _, t := range req.Topics {
		rt := kmsg.NewDescribeProducersResponseTopic()
		rt.Topic = t.Topic
		for _, p := range t.Partitions {
			rp := kmsg.NewDescribeProducersResponseTopicPartition()
			rp.Partition = p
			part, ok := b.replicas.Partition(t.Topic, p)
			if !ok {
				rp.ErrorCode = errorCode(b.missingPartitionError(t.Topic, p))
			} else if isLeader, _, _ := part.Leader(); !isLeader {
				rp.ErrorCode = kerr.NotLeaderForPartition.Code
			} else {
				for _, pi := range part.Producers() {
					ap := kmsg.NewDescribeProducersResponseTopicPartitionActiveProducer()
					ap.ProducerID, ap.ProducerEpoch, ap.LastSequence, ap.LastTimestamp = pi.ProducerID, int32(pi.Epoch), pi.LastSequence, pi.LastTimestamp
					ap.CoordinatorEpoch, ap.CurrentTxnStartOffset = pi.CoordEpoch, pi.TxnFirst
					rp.ActiveProducers = append(rp.ActiveProducers, ap)
				}
			}
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
	}
	return resp
}

// markUnstable answers UNSTABLE_OFFSET_COMMIT (KIP-447) for partitions of a RequireStable
// OffsetFetch whose offset an open transaction is about to change, so a new owner waits for it.
func (b *Broker) markUnstable(groupID string, topic string, partition int32, code *int16) {
	if *code == 0 && b.coordinator().PendingTxnOffset(groupID, topic, partition) {
		*code = kerr.UnstableOffsetCommit.Code
	}
}
