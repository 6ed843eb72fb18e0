package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"
)

// TestClusterRestartedBrokerRejoinsISRAfterItsReplicas restarts a broker hosting many partitions
// and checks that it shows up in a partition's ISR only after its replica of that partition has
// started: a restarting broker opens its partitions one at a time, and one counted in sync before
// (its heartbeats naming only started partitions as lagging) draws leadership transfers and lets
// min.insync.replicas count a replica that has not replayed its log.
func TestClusterRestartedBrokerRejoinsISRAfterItsReplicas(t *testing.T) {
	c := startCluster(t, 3, "--log-level", "info") // info: the "partition started" lines
	const topic, partitions = "rejoin", 12
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

	logStart, err := os.Stat(b.logPath)
	if err != nil {
		t.Fatal(err)
	}
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
	started := partitionsStarted(t, b.logPath, logStart.Size(), topic)
	for p := int32(0); p < partitions; p++ {
		s, ok := started[p]
		if !ok {
			t.Errorf("partition %d: in the ISR at %s, but the restarted broker never logged starting it", p, joined[p].Format(time.TimeOnly+".000"))
			continue
		}
		if joined[p].Before(s) {
			t.Errorf("partition %d: the restarted broker was in the ISR at %s, before its replica started at %s",
				p, joined[p].Format(time.TimeOnly+".000"), s.Format(time.TimeOnly+".000"))
		}
	}
}

var partitionStartedLine = regexp.MustCompile(`^time=(\S+) .*msg="partition started" .*topic=(\S+) partition=(\d+)`)

// partitionsStarted reads when the broker logged starting each partition of topic, from offset on.
func partitionsStarted(t *testing.T, path string, offset int64, topic string) map[int32]time.Time {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Seek(offset, 0); err != nil {
		t.Fatal(err)
	}
	out := map[int32]time.Time{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := partitionStartedLine.FindStringSubmatch(sc.Text())
		if m == nil || m[2] != topic {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, m[1])
		p, _ := strconv.Atoi(m[3])
		if err == nil {
			out[int32(p)] = at
		}
	}
	return out
}
