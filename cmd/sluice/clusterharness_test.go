package main

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicebroker/sluice/internal/testcluster"
)

// The multi-broker harness of the end-to-end tests (the one-broker harness is harness_test.go; both
// run brokers through internal/testcluster, as bench/chaos does).

// testCluster is n broker processes on loopback, all controller voters; brokers[i] is node i+1.
type testCluster struct {
	t       *testing.T
	brokers []*testBroker
	voters  string // --controller-voters
}

// startCluster starts n brokers and waits until each serves. Leadership goes back to preferred
// replicas every 2 s and a follower 3 s behind leaves the ISR, so tests see both soon.
func startCluster(t *testing.T, n int, extra ...string) *testCluster {
	t.Helper()
	if testing.Short() {
		t.Skip("three broker processes")
	}
	c := &testCluster{t: t}
	nodes := make([]*testcluster.Node, n)
	for i := range n {
		c.brokers = append(c.brokers, newTestBroker(t, int32(i+1), freePort(t), freePort(t)))
		nodes[i] = c.brokers[i].Node
	}
	c.voters = testcluster.Voters(nodes)
	for _, b := range c.brokers {
		b.Args = append(b.Args, append([]string{
			"--controller-voters", c.voters,
			"--leader-rebalance-interval", "2s",
			"--replica-lag-max", "3s",
		}, extra...)...)
	}
	for _, b := range c.brokers {
		b.launch() // all at once: the controller needs a majority before any broker can serve
	}
	for _, b := range c.brokers {
		b.waitReady()
	}
	return c
}

func (c *testCluster) node(id int32) *testBroker { return c.brokers[id-1] }

// addBroker starts one more broker, not a controller voter: it joins through the others. setup, if
// any, adjusts it before it starts (a data directory elsewhere, more flags).
func (c *testCluster) addBroker(setup ...func(*testBroker)) *testBroker {
	c.t.Helper()
	id := int32(len(c.brokers) + 1)
	b := newTestBroker(c.t, id, freePort(c.t), freePort(c.t),
		"--controller-voters", c.voters,
		"--bootstrap-servers", c.brokers[0].Addr+","+c.brokers[1].Addr,
		"--leader-rebalance-interval", "2s",
		"--replica-lag-max", "3s",
	)
	for _, f := range setup {
		f(b)
	}
	c.brokers = append(c.brokers, b)
	b.start()
	return b
}

// client is a franz-go client seeded with every broker, so it survives any one of them dying.
func (c *testCluster) client(opts ...kgo.Opt) *kgo.Client {
	c.t.Helper()
	seeds := make([]string, len(c.brokers))
	for i, b := range c.brokers {
		seeds[i] = b.Addr
	}
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(seeds...)}, opts...)...)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(cl.Close)
	return cl
}

func (c *testCluster) admin() *kadm.Client { return kadm.NewClient(c.client()) }

func (c *testCluster) createTopic(name string, partitions int32, rf int16, configs map[string]*string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := c.admin().CreateTopic(ctx, partitions, rf, configs, name)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		c.t.Fatalf("create topic %s: %v", name, err)
	}
}

// partitions returns the topic's partitions as a live broker reports them.
func (c *testCluster) partitions(topic string) (map[int32]kadm.PartitionDetail, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	md, err := c.admin().Metadata(ctx, topic)
	if err != nil {
		return nil, err
	}
	td, ok := md.Topics[topic]
	if !ok || td.Err != nil {
		return nil, fmt.Errorf("topic %s: %v", topic, td.Err)
	}
	return td.Partitions, nil
}

// waitFor polls cond until it holds, failing the test after timeout.
func (c *testCluster) waitFor(timeout time.Duration, what string, cond func() error) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("waiting for %s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitBalanced waits until every partition of topic is led by its preferred replica with every
// replica in sync.
func (c *testCluster) waitBalanced(topic string) {
	c.t.Helper()
	c.waitFor(60*time.Second, topic+" balanced with a full ISR", func() error {
		parts, err := c.partitions(topic)
		if err != nil {
			return err
		}
		for _, p := range parts {
			if p.Err != nil || len(p.Replicas) == 0 || p.Leader != p.Replicas[0] || len(p.ISR) != len(p.Replicas) {
				return fmt.Errorf("partition %d: leader %d, replicas %v, isr %v, err %v", p.Partition, p.Leader, p.Replicas, p.ISR, p.Err)
			}
		}
		return nil
	})
}

func (c *testCluster) leaderOf(topic string, partition int32) int32 {
	c.t.Helper()
	var leader int32
	c.waitFor(30*time.Second, "a leader", func() error {
		parts, err := c.partitions(topic)
		if err != nil {
			return err
		}
		if p := parts[partition]; p.Leader > 0 {
			leader = p.Leader
			return nil
		}
		return errors.New("no leader")
	})
	return leader
}

// findCoordinator asks the cluster which broker coordinates key, a group
// (testcluster.GroupCoordinator) or a transactional id (testcluster.TransactionCoordinator).
func (c *testCluster) findCoordinator(typ int8, key string) int32 {
	c.t.Helper()
	var id int32
	c.waitFor(30*time.Second, "a coordinator", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var err error
		id, err = testcluster.FindCoordinator(ctx, c.client(), typ, key)
		return err
	})
	return id
}
