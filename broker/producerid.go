package broker

import (
	"context"
	"sync"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicebroker/sluice/quorum"
)

func init() {
	register(kmsg.InitProducerID, 0, 4, serveRequest((*Broker).handleInitProducerID)) // see txn_handlers.go
}

// producerIDBlockSize is how many producer ids one controller round trip reserves for this broker.
const producerIDBlockSize = 1000

// producerIDs hands out producer ids from blocks reserved in the controller, so ids are unique across
// brokers and restarts while InitProducerId rarely waits for Raft.
type producerIDs struct {
	ctl *quorum.Controller

	mu         sync.Mutex
	next, last int64 // next id to give; last id of the block (inclusive)
}

func (p *producerIDs) allocate(ctx context.Context) (int64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.next == 0 || p.next > p.last {
		first, err := p.ctl.AllocateProducerIDs(ctx, producerIDBlockSize)
		if err != nil {
			return -1, err
		}
		p.next, p.last = first, first+producerIDBlockSize-1
	}
	id := p.next
	p.next++
	return id, nil
}

// handleInitProducerID serves idempotent producers: every call gets a fresh producer id at epoch 0, as
// Kafka does without a transactional id. Transactional ids go to the transaction coordinator.
func (b *Broker) handleInitProducerID(req *kmsg.InitProducerIDRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.InitProducerIDResponse)
	resp.ProducerID, resp.ProducerEpoch = -1, -1
	if req.TransactionalID != nil && *req.TransactionalID != "" {
		return b.handleInitTransactional(req, resp)
	}
	ctx, cancel := b.requestContext(0)
	defer cancel()
	id, err := b.pids.allocate(ctx)
	if err != nil {
		resp.ErrorCode = kerr.CoordinatorNotAvailable.Code
		return resp
	}
	resp.ProducerID, resp.ProducerEpoch = id, 0
	return resp
}
