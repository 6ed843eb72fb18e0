package broker

import (
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicebroker/sluice/txn"
)

func init() {
	// Transactions as before KIP-890 part 2 (no transaction.version feature is advertised):
	// InitProducerId up to 4 (producerid.go), AddPartitionsToTxn up to 4 (v4 is the batched broker
	// form), EndTxn up to 4, TxnOffsetCommit up to 3 (v4+ belong to KIP-890), AddOffsetsToTxn up to 3,
	// WriteTxnMarkers up to 1, ListTransactions up to 1 (v2 filters by transactional id pattern).
	register(kmsg.AddPartitionsToTxn, 0, 4, serveRequest((*Broker).handleAddPartitionsToTxn))
	register(kmsg.AddOffsetsToTxn, 0, 3, serveRequest((*Broker).handleAddOffsetsToTxn))
	register(kmsg.EndTxn, 0, 4, serveRequest((*Broker).handleEndTxn))
	register(kmsg.WriteTxnMarkers, 0, 1, serveRequest((*Broker).handleWriteTxnMarkers))
	register(kmsg.TxnOffsetCommit, 0, 3, serveRequest((*Broker).handleTxnOffsetCommit))
	register(kmsg.DescribeProducers, 0, 0, serveRequest((*Broker).handleDescribeProducers))
	register(kmsg.DescribeTransactions, 0, 0, serveRequest((*Broker).handleDescribeTransactions))
	register(kmsg.ListTransactions, 0, 1, serveRequest((*Broker).handleListTransactions))
}

// The transaction APIs: the coordinator's (InitProducerId with a transactional id, AddPartitionsToTxn,
// AddOffsetsToTxn, EndTxn, TxnOffsetCommit, DescribeTransactions, ListTransactions) and the
// partitions' (WriteTxnMarkers, DescribeProducers).

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
	t, ok := b.internalTopicMeta(ctx, &b.groups.topic, true)
	if !ok {
		resp.ErrorCode = kerr.CoordinatorNotAvailable.Code
		return resp
	}
	tp := txn.TopicPartition{Topic: offsetsTopic, Partition: partitionOf(req.Group, t)}
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
	if t, ok := b.internalTopicMeta(b.ctx, &b.txns.topic, false); ok {
		n := int32(len(t.Partitions))
		for p := range n {
			if part, ok := b.replicas.Partition(txnTopic, p); ok {
				if isLeader, _, _ := part.Leader(); isLeader {
					b.loadInternalPartition(b.ctx, &b.txns.topic, b.txnCoordinator(), p, n)
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
