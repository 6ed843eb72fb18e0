package broker

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicebroker/sluice/quorum"
	"github.com/sluicebroker/sluice/replica"
)

func init() {
	// DescribeLogDirs v0-4 (kafbat-ui, Cruise Control, kafka-log-dirs.sh); v4 adds the disk's
	// total and usable bytes.
	register(kmsg.DescribeLogDirs, 0, 4, serveRequest((*Broker).handleDescribeLogDirs))
	// ElectLeaders v0-2: preferred elections; unclean ones are refused (Raft elects only
	// up-to-date replicas).
	register(kmsg.ElectLeaders, 0, 2, serveRequest((*Broker).handleElectLeaders))
}

// handleDescribeLogDirs describes the one log directory (--data-dir/logs) and the partitions this
// broker hosts in it, all of them or those asked for.
func (b *Broker) handleDescribeLogDirs(req *kmsg.DescribeLogDirsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.DescribeLogDirsResponse)
	dir := kmsg.NewDescribeLogDirsResponseDir()
	dir.Dir = b.cfg.LogDir
	dir.TotalBytes, dir.UsableBytes = -1, -1
	if b.cfg.LogDir != "" {
		if free, total, err := statDisk(b.cfg.LogDir); err == nil {
			dir.TotalBytes, dir.UsableBytes = total, free
		}
	}
	var want map[string][]int32 // nil: every partition
	if req.Topics != nil {
		want = map[string][]int32{}
		for _, t := range req.Topics {
			want[t.Topic] = append(want[t.Topic], t.Partitions...)
		}
	}
	byTopic := map[string]*kmsg.DescribeLogDirsResponseDirTopic{}
	var names []string
	for _, p := range b.replicas.Partitions() {
		if want != nil && !slices.Contains(want[p.Topic()], p.Index()) {
			continue
		}
		t := byTopic[p.Topic()]
		if t == nil {
			nt := kmsg.NewDescribeLogDirsResponseDirTopic()
			nt.Topic = p.Topic()
			t = &nt
			byTopic[p.Topic()] = t
			names = append(names, p.Topic())
		}
		rp := kmsg.NewDescribeLogDirsResponseDirTopicPartition()
		rp.Partition, rp.Size = p.Index(), p.Size()
		t.Partitions = append(t.Partitions, rp)
	}
	slices.Sort(names)
	for _, n := range names {
		t := byTopic[n]
		slices.SortFunc(t.Partitions, func(a, b kmsg.DescribeLogDirsResponseDirTopicPartition) int { return int(a.Partition - b.Partition) })
		dir.Topics = append(dir.Topics, *t)
	}
	resp.Dirs = append(resp.Dirs, dir)
	return resp
}

// electWait bounds how long ElectLeaders waits for a leadership transfer to show.
const electWait = 10 * time.Second

// electRetry is how often ElectLeaders repeats a leadership transfer that has not shown yet.
const electRetry = time.Second

// handleElectLeaders moves leadership to each partition's preferred replica (the first): through
// this node's replica when it hosts one (a follower forwards the request to the Raft leader), else
// by forwarding the request to the preferred replica's broker.
func (b *Broker) handleElectLeaders(req *kmsg.ElectLeadersRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.ElectLeadersResponse)
	md := b.ctl.Metadata()
	type tp struct {
		topic     string
		partition int32
	}
	var parts []tp
	if req.Topics == nil { // every partition
		for name, t := range md.Topics {
			for _, pm := range t.Partitions {
				parts = append(parts, tp{name, pm.Partition})
			}
		}
		slices.SortFunc(parts, func(a, b tp) int {
			if a.topic != b.topic {
				if a.topic < b.topic {
					return -1
				}
				return 1
			}
			return int(a.partition - b.partition)
		})
	} else {
		for _, t := range req.Topics {
			for _, p := range t.Partitions {
				parts = append(parts, tp{t.Topic, p})
			}
		}
	}
	timeout := time.Duration(req.TimeoutMillis) * time.Millisecond
	if timeout <= 0 || timeout > electWait {
		timeout = electWait
	}
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()

	results := make([]kmsg.ElectLeadersResponseTopicPartition, len(parts))
	forward := map[int32][]int{} // broker → indexes of the partitions it should elect
	var waiting []int
	transfers := map[int]*replica.Partition{} // index → the hosted replica asked to transfer
	for i, p := range parts {
		r := &results[i]
		*r = kmsg.NewElectLeadersResponseTopicPartition()
		r.Partition = p.partition
		pm, ok := b.agent.PartitionMeta(p.topic, p.partition)
		if !ok {
			r.ErrorCode = kerr.UnknownTopicOrPartition.Code
			continue
		}
		leader, _ := b.agent.PartitionLeader(p.topic, pm)
		if req.Version >= 1 && req.ElectionType == 1 {
			// Unclean: Raft never elects a replica missing committed data.
			if leader >= 0 {
				r.ErrorCode = kerr.ElectionNotNeeded.Code
			} else {
				r.ErrorCode = kerr.EligibleLeadersNotAvailable.Code
				msg := "unclean leader election is not supported: a partition's Raft group elects only up-to-date replicas"
				r.ErrorMessage = &msg
			}
			continue
		}
		preferred := pm.Replicas[0]
		switch {
		case leader == preferred:
			r.ErrorCode = kerr.ElectionNotNeeded.Code
		case !b.ctl.Alive(preferred) || !slices.Contains(b.agent.InSyncReplicas(p.topic, pm, leader), preferred):
			r.ErrorCode = kerr.PreferredLeaderNotAvailable.Code
			msg := fmt.Sprintf("preferred replica %d: alive %v, in sync %v (leader %d, on node %d)", preferred, b.ctl.Alive(preferred), b.agent.InSyncReplicas(p.topic, pm, leader), leader, b.cfg.NodeID)
			r.ErrorMessage = &msg
		default:
			part, hosted := b.replicas.Partition(p.topic, p.partition)
			if !hosted || part.ShardID() != pm.ShardID {
				forward[preferred] = append(forward[preferred], i)
				continue
			}
			if err := part.TransferLeader(preferred); err != nil {
				r.ErrorCode = kerr.PreferredLeaderNotAvailable.Code
				msg := err.Error()
				r.ErrorMessage = &msg
				continue
			}
			transfers[i] = part
			waiting = append(waiting, i)
		}
	}
	for id, idx := range forward {
		b.forwardElect(ctx, md, id, req.Version, idx, func(i int) (string, int32) { return parts[i].topic, parts[i].partition }, results)
	}
	// Wait until each transfer shows (the preferred replica leads), or answer REQUEST_TIMED_OUT.
	// Raft drops a transfer silently when the target has not caught up within an election
	// timeout (or the request reached a follower during an election), so it is asked again
	// every electRetry while the preferred replica does not lead.
	for _, i := range waiting {
		asked := time.Now()
		for {
			pm, ok := b.agent.PartitionMeta(parts[i].topic, parts[i].partition)
			if !ok {
				results[i].ErrorCode = kerr.UnknownTopicOrPartition.Code
				break
			}
			if leader, _ := b.agent.PartitionLeader(parts[i].topic, pm); leader == pm.Replicas[0] {
				break
			}
			if time.Since(asked) >= electRetry {
				_ = transfers[i].TransferLeader(pm.Replicas[0]) // an error: the next round tries again
				asked = time.Now()
			}
			select {
			case <-ctx.Done():
				results[i].ErrorCode = kerr.RequestTimedOut.Code
			case <-time.After(20 * time.Millisecond):
				continue
			}
			break
		}
	}
	for i, p := range parts {
		if n := len(resp.Topics); n == 0 || resp.Topics[n-1].Topic != p.topic {
			t := kmsg.NewElectLeadersResponseTopic()
			t.Topic = p.topic
			resp.Topics = append(resp.Topics, t)
		}
		t := &resp.Topics[len(resp.Topics)-1]
		t.Partitions = append(t.Partitions, results[i])
	}
	return resp
}

// forwardElect asks broker id (which hosts the preferred replica) to elect the partitions at idx.
func (b *Broker) forwardElect(ctx context.Context, md *quorum.Metadata, id int32, version int16, idx []int,
	part func(int) (string, int32), results []kmsg.ElectLeadersResponseTopicPartition) {
	fail := func(code int16) {
		for _, i := range idx {
			results[i].ErrorCode = code
		}
	}
	bi, ok := md.Brokers[id]
	if !ok {
		fail(kerr.PreferredLeaderNotAvailable.Code)
		return
	}
	req := kmsg.NewPtrElectLeadersRequest()
	req.Version = version
	req.TimeoutMillis = int32(electWait / time.Millisecond)
	pos := map[[2]any]int{}
	for _, i := range idx {
		topic, p := part(i)
		if n := len(req.Topics); n == 0 || req.Topics[n-1].Topic != topic {
			t := kmsg.NewElectLeadersRequestTopic()
			t.Topic = topic
			req.Topics = append(req.Topics, t)
		}
		t := &req.Topics[len(req.Topics)-1]
		t.Partitions = append(t.Partitions, p)
		pos[[2]any{topic, p}] = i
	}
	resp := kmsg.NewPtrElectLeadersResponse()
	var rt KafkaMarkerSender // its one-connection round trip
	if err := rt.roundTrip(ctx, net.JoinHostPort(bi.Host, strconv.Itoa(int(bi.Port))), req, resp); err != nil {
		fail(kerr.RequestTimedOut.Code)
		return
	}
	if resp.ErrorCode != 0 {
		fail(resp.ErrorCode)
		return
	}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if i, ok := pos[[2]any{t.Topic, p.Partition}]; ok {
				results[i] = p
			}
		}
	}
}
