package quorum

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"maps"
	"strconv"

	sm "github.com/lni/dragonboat/v4/statemachine"
)

// The cluster's own records: its id, its brokers, and producer-id blocks.

// bootstrapCmd sets the cluster id; the first applied wins, later ones change nothing.
type bootstrapCmd struct {
	noChecks
	ClusterID string `json:"cluster_id,omitempty"`
}

func (*bootstrapCmd) op() string { return "bootstrap" }

func (cmd *bootstrapCmd) apply(md *Metadata) (*Metadata, sm.Result) {
	if md.ClusterID != "" || cmd.ClusterID == "" {
		return nil, sm.Result{}
	}
	next := *md
	next.ClusterID = cmd.ClusterID
	return &next, sm.Result{}
}

func newClusterID() string {
	var b [16]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// RegisterBroker records (or updates) a broker's addresses.
func (c *Controller) RegisterBroker(ctx context.Context, b BrokerInfo) error {
	_, _, err := c.propose(ctx, &registerBrokerCmd{Broker: &b})
	return err
}

type registerBrokerCmd struct {
	Broker *BrokerInfo `json:"broker,omitempty"`
}

func (*registerBrokerCmd) op() string { return "register_broker" }

func (cmd *registerBrokerCmd) validate() error {
	if b := cmd.Broker; b == nil || b.NodeID < 0 || b.Host == "" || b.Port <= 0 {
		if b == nil {
			b = &BrokerInfo{}
		}
		return fmt.Errorf("%w: broker %d at %s:%d", ErrInvalidRequest, b.NodeID, b.Host, b.Port)
	}
	return nil
}

func (cmd *registerBrokerCmd) apply(md *Metadata) (*Metadata, sm.Result) {
	if cmd.Broker == nil {
		return nil, invalid("no broker")
	}
	if old, ok := md.Brokers[cmd.Broker.NodeID]; ok && old == *cmd.Broker {
		return nil, sm.Result{}
	}
	next := *md
	next.Brokers = maps.Clone(md.Brokers)
	if next.Brokers == nil {
		next.Brokers = map[int32]BrokerInfo{}
	}
	next.Brokers[cmd.Broker.NodeID] = *cmd.Broker
	return &next, sm.Result{}
}

// AllocateProducerIDs reserves n consecutive producer ids and returns the first. Blocks are
// replicated, so ids are never handed out twice, restarts included.
func (c *Controller) AllocateProducerIDs(ctx context.Context, n int) (first int64, err error) {
	// A retried allocation may waste a block; ids are never handed out twice either way.
	res, _, err := c.propose(ctx, &allocateProducerIDsCmd{N: int64(n)})
	if err != nil {
		return 0, err
	}
	first, err = strconv.ParseInt(string(res.Data), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("quorum: producer id result %q: %w", res.Data, err)
	}
	return first, nil
}

type allocateProducerIDsCmd struct {
	N int64 `json:"n,omitempty"` // the block's size
}

func (*allocateProducerIDsCmd) op() string { return "allocate_producer_ids" }

func (cmd *allocateProducerIDsCmd) validate() error {
	if cmd.N < 1 || cmd.N > 1<<20 {
		return fmt.Errorf("%w: producer id block of %d", ErrInvalidRequest, cmd.N)
	}
	return nil
}

// apply answers the block's first id (decimal).
func (cmd *allocateProducerIDsCmd) apply(md *Metadata) (*Metadata, sm.Result) {
	if cmd.N < 1 {
		return nil, invalid("empty producer id block")
	}
	next := *md
	first := md.NextProducerID
	next.NextProducerID += cmd.N
	return &next, sm.Result{Value: resultOK, Data: strconv.AppendInt(nil, first, 10)}
}
