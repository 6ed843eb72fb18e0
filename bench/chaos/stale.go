package main

import (
	"context"
	"fmt"
	"log"
	"slices"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Mode "stale" reproduces what a paused and resumed leader tells clients: for one partition,
// SIGSTOP its leader until the others elect a new one, SIGCONT it, and for a few seconds ask
// the resumed broker directly (Metadata, and Fetch at an offset the new leader has committed)
// what it answers. A broker that knows it lost leadership answers NOT_LEADER / FENCED; one that
// still acts as leader from its stale state names itself in Metadata and answers Fetch with
// OFFSET_OUT_OF_RANGE, which makes a client reset its position.

type staleRound struct {
	N               int            `json:"n"`
	OldLeader       int32          `json:"old_leader"`
	OldEpoch        int32          `json:"old_epoch"`
	NewLeader       int32          `json:"new_leader"`
	NewEpoch        int32          `json:"new_epoch"`
	NewHighWater    int64          `json:"new_high_watermark"`
	PausedMs        int64          `json:"paused_ms"`
	SelfFromMs      int64          `json:"claims_leadership_from_ms"` // after SIGCONT, first answer naming itself leader (-1: none)
	SelfLeaderMs    int64          `json:"claims_leadership_ms"`      // last such answer
	Timeline        []string       `json:"timeline"`                  // changes in what it answered
	SelfLeaderEpoch int32          `json:"claimed_epoch"`             // at the last such answer
	SelfStaleClaims int            `json:"stale_claims"`              // answers naming itself at an epoch not above the new leader's
	SelfStaleLastMs int64          `json:"stale_claims_last_ms"`      // after SIGCONT, the last of those (-1: none)
	FetchCodes      map[string]int `json:"fetch_codes"`               // Fetch at the new high watermark - 1, CurrentLeaderEpoch -1
	FetchCodesEpoch map[string]int `json:"fetch_codes_epoch"`         // the same with the new leader's epoch
	Error           string         `json:"error,omitempty"`
}

type staleSummary struct {
	Mode   string       `json:"mode"`
	Seed   uint64       `json:"seed"`
	Rounds []staleRound `json:"rounds"`
}

func runStale(ctx context.Context, cfg config, c *cluster) (*staleSummary, error) {
	cfg.partitions = 1
	adm, admCl, err := startAll(ctx, cfg, c)
	if err != nil {
		return nil, err
	}
	defer admCl.Close()
	pcl, err := producerClient(cfg, c)
	if err != nil {
		return nil, err
	}
	defer pcl.Close()
	pctx, pcancel := context.WithCancel(ctx)
	defer pcancel()
	go runProbe(pctx, pcl, 0, &probe{got: make(chan struct{})}) // steady writes, so offsets move

	sum := &staleSummary{Mode: "stale", Seed: cfg.seed}
	for i := 1; i <= cfg.kills && ctx.Err() == nil; i++ {
		r := staleOnce(ctx, cfg, c, admCl, i)
		sum.Rounds = append(sum.Rounds, r)
		log.Printf("round %d: leader %d (epoch %d) paused %d ms, new leader %d (epoch %d, high watermark %d); resumed broker named itself leader from +%d to +%d ms (epoch %d; %d answers at a stale epoch, the last at +%d ms); fetch codes %v, with the new epoch %v %s",
			r.N, r.OldLeader, r.OldEpoch, r.PausedMs, r.NewLeader, r.NewEpoch, r.NewHighWater, r.SelfFromMs, r.SelfLeaderMs, r.SelfLeaderEpoch, r.SelfStaleClaims, r.SelfStaleLastMs, r.FetchCodes, r.FetchCodesEpoch, r.Error)
		for _, l := range r.Timeline {
			log.Printf("    %s", l)
		}
		hctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		_ = waitHealthy(hctx, adm, cfg.topic, cfg.brokers, 1, true)
		cancel()
	}
	stale := 0
	for _, r := range sum.Rounds {
		// Stale: it names itself leader with an epoch not newer than the new leader's, or
		// answers OFFSET_OUT_OF_RANGE for an offset the new leader has committed.
		if r.Error != "" {
			continue // counted apart below
		}
		// Any answer naming itself at an epoch not above the new leader's: later answers at a
		// newer epoch (a real re-election, e.g. a preferred-leader transfer back) do not undo it.
		if r.SelfStaleClaims > 0 || r.FetchCodes[kerr.OffsetOutOfRange.Message] > 0 {
			stale++
		}
	}
	failed := 0
	for _, r := range sum.Rounds {
		if r.Error != "" {
			failed++
		}
	}
	fmt.Printf("\nstale leader: %d of %d rounds had the resumed broker claim leadership (at an epoch not above the new leader's) or answer OFFSET_OUT_OF_RANGE; %d rounds failed to set up\n", stale, len(sum.Rounds)-failed, failed)
	return sum, nil
}

// partitionView asks one broker directly for partition 0's leader, epoch and the topic id.
func partitionView(ctx context.Context, cl *kgo.Client, id int32, topic string) (leader, epoch int32, topicID [16]byte, err error) {
	return partitionViewOf(ctx, cl, id, topic, 0)
}

func partitionViewOf(ctx context.Context, cl *kgo.Client, id int32, topic string, part int32) (leader, epoch int32, topicID [16]byte, err error) {
	ctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl.Broker(int(id)))
	if err != nil {
		return -1, -1, topicID, err
	}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if p.Partition == part {
				return p.Leader, p.LeaderEpoch, t.TopicID, nil
			}
		}
	}
	return -1, -1, topicID, fmt.Errorf("no partition %d in broker %d's metadata", part, id)
}

func fetchCode(ctx context.Context, cl *kgo.Client, id int32, topic string, topicID [16]byte, offset int64, epoch int32) (string, int64) {
	ctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	req := kmsg.NewPtrFetchRequest()
	req.ReplicaID = -1
	req.MaxBytes = 1 << 20
	req.SessionEpoch = -1
	t := kmsg.NewFetchRequestTopic()
	t.Topic, t.TopicID = topic, topicID
	p := kmsg.NewFetchRequestTopicPartition()
	p.Partition, p.FetchOffset, p.CurrentLeaderEpoch, p.PartitionMaxBytes, p.LogStartOffset = 0, offset, epoch, 1<<16, -1
	t.Partitions = append(t.Partitions, p)
	req.Topics = append(req.Topics, t)
	resp, err := req.RequestWith(ctx, cl.Broker(int(id)))
	if err != nil {
		return "request failed", -1
	}
	if len(resp.Topics) == 0 || len(resp.Topics[0].Partitions) == 0 {
		return "empty response", -1
	}
	rp := resp.Topics[0].Partitions[0]
	if rp.ErrorCode == 0 {
		return "OK", rp.HighWatermark
	}
	if e, ok := kerr.ErrorForCode(rp.ErrorCode).(*kerr.Error); ok {
		return e.Message, rp.HighWatermark
	}
	return fmt.Sprintf("error code %d", rp.ErrorCode), rp.HighWatermark
}

func staleOnce(ctx context.Context, cfg config, c *cluster, cl *kgo.Client, n int) staleRound {
	r := staleRound{N: n, NewLeader: -1, SelfStaleLastMs: -1, FetchCodes: map[string]int{}, FetchCodesEpoch: map[string]int{}}
	var err error
	// The previous round's handover may still be settling (the cluster-wide health check can
	// pass on another broker's answer): wait for this broker's own view to name a leader.
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		r.OldLeader, r.OldEpoch, _, err = partitionView(ctx, cl, c.brokers[0].ID, cfg.topic)
		if err == nil && r.OldLeader >= 0 || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
	}
	if err != nil || r.OldLeader < 0 {
		r.Error = fmt.Sprintf("no leader: %v", err)
		return r
	}
	victim := c.byID(r.OldLeader)
	var others []*broker
	for _, b := range c.brokers {
		if b != victim {
			others = append(others, b)
		}
	}
	t0 := time.Now()
	victim.Signal(syscall.SIGSTOP)
	// Wait until the others agree on a new leader, then a little longer (a pause like a GC
	// stall or a busy VM: longer than the 3 s after which the controller declares it dead).
	var topicID [16]byte
	for time.Since(t0) < 20*time.Second && r.NewLeader < 0 {
		time.Sleep(50 * time.Millisecond)
		var views []int32
		for _, b := range others {
			l, e, id, err := partitionView(ctx, cl, b.ID, cfg.topic)
			if err == nil && l >= 0 && l != r.OldLeader {
				views = append(views, l)
				r.NewEpoch, topicID = e, id
			}
		}
		if len(views) == len(others) && !slices.ContainsFunc(views, func(l int32) bool { return l != views[0] }) {
			r.NewLeader = views[0]
		}
	}
	if r.NewLeader < 0 {
		victim.Signal(syscall.SIGCONT)
		r.Error = "no new leader while paused"
		return r
	}
	time.Sleep(time.Until(t0.Add(cfg.downMin)))
	time.Sleep(300 * time.Millisecond) // let the first records of the new epoch commit
	_, hw := fetchCode(ctx, cl, r.NewLeader, cfg.topic, topicID, 0, r.NewEpoch)
	// A new leader's high watermark reads 0 until its first committed entry is applied; a fetch
	// at -1 would be out of range on any broker, so wait (the pause gets a little longer).
	for deadline := time.Now().Add(2 * time.Second); hw <= 0 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		_, hw = fetchCode(ctx, cl, r.NewLeader, cfg.topic, topicID, 0, r.NewEpoch)
	}
	r.NewHighWater = hw
	victim.Signal(syscall.SIGCONT)
	tResume := time.Now()
	r.PausedMs = tResume.Sub(t0).Milliseconds()
	var firstSelf, lastSelf time.Time
	prev := ""
	for time.Since(tResume) < 3*time.Second {
		l, e, _, err := partitionView(ctx, cl, victim.ID, cfg.topic)
		if err == nil && l == victim.ID {
			if firstSelf.IsZero() {
				firstSelf = time.Now()
			}
			lastSelf, r.SelfLeaderEpoch = time.Now(), e
			if e <= r.NewEpoch {
				r.SelfStaleClaims++
				r.SelfStaleLastMs = time.Since(tResume).Milliseconds()
			}
		}
		at := time.Since(tResume).Milliseconds()
		code, fhw := fetchCode(ctx, cl, victim.ID, cfg.topic, topicID, hw-1, -1)
		r.FetchCodes[code]++
		code2, _ := fetchCode(ctx, cl, victim.ID, cfg.topic, topicID, hw-1, r.NewEpoch)
		r.FetchCodesEpoch[code2]++
		if now := fmt.Sprintf("metadata leader %d epoch %d (err %v); fetch %s (high watermark %d), with epoch %s", l, e, err, code, fhw, code2); now != prev {
			r.Timeline = append(r.Timeline, fmt.Sprintf("+%d ms: %s", at, now))
			prev = now
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.SelfFromMs = -1
	if !firstSelf.IsZero() {
		r.SelfFromMs = firstSelf.Sub(tResume).Milliseconds()
		r.SelfLeaderMs = lastSelf.Sub(tResume).Milliseconds()
	}
	return r
}
