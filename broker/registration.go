package broker

import (
	"context"
	"net"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() {
	// A broker joining as a controller observer (RAFT listener).
	register(kmsg.BrokerRegistration, 0, 0, serveRequest((*Broker).handleBrokerRegistration))
}

// RaftListener names the listener a joining broker registers its Raft address under in
// BrokerRegistration (KRaft's API; Sluice brokers use it to join as controller observers).
const RaftListener = "RAFT"

// handleBrokerRegistration adds a broker that is not a controller voter to the controller group as a
// non-voting member, so that it follows the cluster metadata; it then registers its Kafka listener
// through the controller itself.
func (b *Broker) handleBrokerRegistration(req *kmsg.BrokerRegistrationRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.BrokerRegistrationResponse)
	if req.ClusterID != "" && req.ClusterID != b.ctl.Metadata().ClusterID {
		resp.ErrorCode = kerr.InconsistentClusterID.Code
		return resp
	}
	var raftAddr string
	for _, l := range req.Listeners {
		if l.Name == RaftListener {
			raftAddr = net.JoinHostPort(l.Host, strconv.Itoa(int(l.Port)))
		}
	}
	if raftAddr == "" || req.BrokerID <= 0 {
		resp.ErrorCode = kerr.InvalidRequest.Code
		return resp
	}
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	if err := b.ctl.AddObserver(ctx, req.BrokerID, raftAddr); err != nil {
		b.log.Warn("a broker could not join", "broker", req.BrokerID, "raft", raftAddr, "err", err)
		resp.ErrorCode = errorCode(err)
		if resp.ErrorCode == kerr.UnknownServerError.Code {
			resp.ErrorCode = kerr.InvalidRequest.Code
		}
		return resp
	}
	b.log.Info("a broker joined the controller group as an observer", "broker", req.BrokerID, "raft", raftAddr)
	return resp
}
