package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestClusterRestartedBrokerRejoinsISRAfterItsReplicas restarts a broker hosting many partitions
// and checks that it shows up in a partition's ISR only after its replica of that partition has
// started: a restarting broker opens its partitions one at a time, and one counted in sync before
// (its heartbeats naming only started partitions as lagging) draws leadership transfers and lets
// min.insync.replicas count a replica that has not replayed its log.
func TestClusterRestartedBrokerRejoinsISRAfterItsReplicas(t *testing.T) {
	c := startCluster(t, 3)
	const topic, partitions = "rejoin", 64
	c.createTopic(topic, partitions, 3, nil)
	c.waitBalanced(topic)

	const victim = 3
	b := c.node(victim)
	b.kill9()
	c.waitFor(30*time.Second, "the killed broker out of every ISR", func() error {
		parts, err := c.partitions(topic)
		if err != nil {
			return err
		}
		for _, p := range parts {
			if slices.Contains(p.ISR, victim) {
				return fmt.Errorf("partition %d: isr %v", p.Partition, p.ISR)
			}
		}
		return nil
	})

	// Records written meanwhile: the restarted replicas have entries to catch up on.
	cl := c.node(1).client(kgo.RequiredAcks(kgo.AllISRAcks()), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.DefaultProduceTopic(topic))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	for i := range partitions * 100 {
		cl.Produce(ctx, &kgo.Record{Partition: int32(i % partitions), Value: make([]byte, 1000)}, nil)
	}
	err := cl.Flush(ctx)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	b.Args = withMetrics(t, b.Args...) // partitionsStarted asks it
	b.launch()
	// Watch the ISR through a broker that stayed up, noting when the restarted one joins each.
	adm := c.node(1).admin()
	joined := map[int32]time.Time{}
	deadline := time.Now().Add(90 * time.Second)
	for len(joined) < partitions {
		if time.Now().After(deadline) {
			t.Fatalf("the restarted broker rejoined the ISR of only %d of %d partitions", len(joined), partitions)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		md, err := adm.Metadata(ctx, topic)
		cancel()
		now := time.Now()
		if err == nil {
			for _, p := range md.Topics[topic].Partitions {
				if _, ok := joined[p.Partition]; !ok && slices.Contains(p.ISR, victim) {
					joined[p.Partition] = now
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	started := partitionsStarted(t, b, topic)
	for p := int32(0); p < partitions; p++ {
		s, ok := started[p]
		if !ok {
			t.Errorf("partition %d: in the ISR at %s, but the restarted broker does not report starting it", p, joined[p].Format(time.TimeOnly+".000"))
			continue
		}
		if testing.Verbose() {
			t.Logf("partition %d: started %s, in the ISR %s", p, s.Format(time.TimeOnly+".000"), joined[p].Format(time.TimeOnly+".000"))
		}
		if joined[p].Before(s) {
			t.Errorf("partition %d: the restarted broker was in the ISR at %s, before its replica started at %s",
				p, joined[p].Format(time.TimeOnly+".000"), s.Format(time.TimeOnly+".000"))
		}
	}
}

// partitionsStarted asks the broker when it started its replica of each partition of topic
// (sluice_partition_start_time_seconds on its /metrics: since its last start).
func partitionsStarted(t *testing.T, b *testBroker, topic string) map[int32]time.Time {
	t.Helper()
	out := map[int32]time.Time{}
	for _, m := range scrape(t, metricsURL(t, b))["sluice_partition_start_time_seconds"].GetMetric() {
		labels := map[string]string{}
		for _, lp := range m.GetLabel() {
			labels[lp.GetName()] = lp.GetValue()
		}
		p, err := strconv.Atoi(labels["partition"])
		if labels["topic"] != topic || err != nil {
			continue
		}
		out[int32(p)] = time.UnixMicro(int64(math.Round(m.GetGauge().GetValue() * 1e6)))
	}
	return out
}

// TestClusterFollowerStaysInSyncAcrossLeaderPause pauses a partition's leader and checks that the
// new leader keeps counting the other surviving follower in sync: a lag check that fails once
// (dropped during the election, or sent to the paused leader and timing out) must not take a
// follower that keeps up out of the ISR, or min.insync.replicas=2 refuses acks=all writes though
// two of three replicas are healthy.
func TestClusterFollowerStaysInSyncAcrossLeaderPause(t *testing.T) {
	c := startCluster(t, 3, "--replica-lag-max", "10s")
	minISR := "2"
	c.createTopic("steady", 1, 3, map[string]*string{"min.insync.replicas": &minISR})
	// A new topic's ISR reads full before the followers' first heartbeats name them lagging (a
	// heartbeat reports lag, not catching up): wait until it has stayed full for a few seconds,
	// past those heartbeats and the followers' first lag checks.
	full := time.Time{}
	c.waitFor(60*time.Second, "the ISR full for 3 s", func() error {
		c.waitBalanced("steady")
		if full.IsZero() {
			full = time.Now()
		}
		parts, err := c.partitions("steady")
		if err != nil || len(parts[0].ISR) != 3 {
			full = time.Time{}
			return fmt.Errorf("isr %v, err %v", parts[0].ISR, err)
		}
		if time.Since(full) < 3*time.Second {
			return errors.New("not yet 3 s")
		}
		return nil
	})
	old := c.leaderOf("steady", 0)
	c.node(old).pause()
	t.Cleanup(c.node(old).resume)

	var survivors []int32
	for id := int32(1); id <= 3; id++ {
		if id != old {
			survivors = append(survivors, id)
		}
	}
	// Each survivor's own answer, so that no request waits on the paused broker.
	view := func(id int32) (leader int32, isr []int32, err error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		md, err := c.node(id).admin().Metadata(ctx, "steady")
		if err != nil {
			return -1, nil, err
		}
		p := md.Topics["steady"].Partitions[0]
		return p.Leader, p.ISR, p.Err
	}
	var leader int32
	c.waitFor(30*time.Second, "a new leader", func() error {
		l, _, err := view(survivors[0])
		if err != nil || l < 0 || l == old {
			return fmt.Errorf("leader %d, err %v", l, err)
		}
		leader = l
		return nil
	})
	follower := survivors[0]
	if follower == leader {
		follower = survivors[1]
	}
	// Past replica-lag-max, when a check stuck on the paused leader would have timed out.
	for end := time.Now().Add(14 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		l, isr, err := view(leader)
		if err != nil || l != leader {
			continue // an election meanwhile; what counts is the leader's own ISR
		}
		if !slices.Contains(isr, follower) {
			t.Fatalf("leader %d dropped follower %d from the ISR (%v) while both were healthy", leader, follower, isr)
		}
	}
}
