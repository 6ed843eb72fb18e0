package main

import (
	"context"
	"fmt"
	"log"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicebroker/sluice/internal/testcluster"
)

// broker is one `sluice serve` child process. Its data directory survives restarts, so a
// restarted broker recovers from its own disk like a real one.
type broker = testcluster.Node

type cluster struct {
	brokers []*broker
}

func newCluster(bin, dataDir string, n, basePort int, extra []string) *cluster {
	c := &cluster{}
	for i := 1; i <= n; i++ {
		addr, raftAddr := fmt.Sprintf("127.0.0.1:%d", basePort+100*i+92), fmt.Sprintf("127.0.0.1:%d", basePort+100*i+93)
		if basePort == 0 { // ports free a moment ago, on a machine others share
			addr, raftAddr = mustFreeAddr(), mustFreeAddr()
		}
		c.brokers = append(c.brokers, &broker{
			ID:       int32(i),
			Addr:     addr,
			RaftAddr: raftAddr,
			DataDir:  filepath.Join(dataDir, fmt.Sprint(i)),
			LogPath:  filepath.Join(dataDir, fmt.Sprintf("broker-%d.log", i)),
			Command:  testcluster.Binary(bin),
			// If this command dies, its brokers must not outlive it on the shared machine.
			KillWithParent: true,
		})
	}
	voters := testcluster.Voters(c.brokers)
	for _, b := range c.brokers {
		b.Args = append([]string{"--controller-voters", voters}, extra...)
	}
	return c
}

func mustFreeAddr() string {
	addr, err := testcluster.FreeAddr()
	if err != nil {
		panic(err)
	}
	return addr
}

func (c *cluster) addrs() []string {
	var out []string
	for _, b := range c.brokers {
		out = append(out, b.Addr)
	}
	return out
}

func (c *cluster) byID(id int32) *broker {
	for _, b := range c.brokers {
		if b.ID == id {
			return b
		}
	}
	return nil
}

// launch starts the broker and waits until its Kafka port accepts connections. Ports in
// 33000-33999 lie in Linux's ephemeral range, so another program's outgoing connection can hold
// one for a while: a broker that exits before listening is started again after a pause.
func (c *cluster) launch(ctx context.Context, b *broker) error {
	for attempt := 1; ; attempt++ {
		if err := b.Start(); err != nil {
			return err
		}
		exited := b.Exited()
		for {
			conn, err := net.DialTimeout("tcp", b.Addr, 200*time.Millisecond)
			if err == nil {
				conn.Close()
				return nil
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("broker %d did not start listening on %s: %w", b.ID, b.Addr, ctx.Err())
			case <-exited:
			case <-time.After(50 * time.Millisecond):
				continue
			}
			break
		}
		b.Forget()
		if attempt >= 30 {
			return fmt.Errorf("broker %d exited before listening %d times (see %s)", b.ID, attempt, b.LogPath)
		}
		log.Printf("broker %d exited before listening (port taken?), starting it again", b.ID)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// shutdown resumes paused brokers and stops every broker gracefully (killing stragglers).
func (c *cluster) shutdown() {
	var wg sync.WaitGroup
	for _, b := range c.brokers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.Stop(syscall.SIGTERM, 20*time.Second)
		}()
	}
	wg.Wait()
}

// adminClient returns a client with short timeouts: a paused broker must not hold up the
// orchestration for the client's default 10 s + 30 s.
func (c *cluster) adminClient() (*kadm.Client, *kgo.Client, error) {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(c.addrs()...),
		kgo.RequestTimeoutOverhead(2*time.Second),
		kgo.DialTimeout(time.Second),
		kgo.MetadataMinAge(50*time.Millisecond),
		kgo.RetryTimeout(3*time.Second),
	)
	if err != nil {
		return nil, nil, err
	}
	return kadm.NewClient(cl), cl, nil
}

// partState is one partition as Metadata shows it.
type partState struct {
	leader   int32
	replicas []int32
	isr      []int32
}

func topicState(ctx context.Context, adm *kadm.Client, topic string) (map[int32]partState, []int32, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	md, err := adm.Metadata(ctx, topic)
	if err != nil {
		return nil, nil, err
	}
	td, ok := md.Topics[topic]
	if !ok || td.Err != nil {
		return nil, nil, fmt.Errorf("topic %s: %v", topic, td.Err)
	}
	out := make(map[int32]partState)
	for p, pd := range td.Partitions {
		out[p] = partState{leader: pd.Leader, replicas: pd.Replicas, isr: pd.ISR}
	}
	var ids []int32
	for _, b := range md.Brokers {
		ids = append(ids, b.NodeID)
	}
	return out, ids, nil
}

// waitHealthy waits until every broker is in Metadata and every partition has a leader and
// a full ISR; with preferred, also until every partition is led by its first replica.
func waitHealthy(ctx context.Context, adm *kadm.Client, topic string, brokers, partitions int, preferred bool) error {
	var last string
	for {
		st, ids, err := topicState(ctx, adm, topic)
		switch {
		case err != nil:
			last = err.Error()
		case len(ids) < brokers:
			last = fmt.Sprintf("%d of %d brokers in metadata", len(ids), brokers)
		case len(st) < partitions:
			last = fmt.Sprintf("%d of %d partitions in metadata", len(st), partitions)
		default:
			last = ""
			for p, ps := range st {
				if ps.leader < 0 || len(ps.isr) < len(ps.replicas) {
					last = fmt.Sprintf("partition %d: leader %d isr %v replicas %v", p, ps.leader, ps.isr, ps.replicas)
					break
				}
				if preferred && len(ps.replicas) > 0 && ps.leader != ps.replicas[0] {
					last = fmt.Sprintf("partition %d: leader %d, preferred %d", p, ps.leader, ps.replicas[0])
					break
				}
			}
			if last == "" {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster not healthy: %s", last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// createTopic creates topic with rf replicas and min.insync.replicas, retrying while the
// controller is still electing or brokers are still registering.
func createTopic(ctx context.Context, adm *kadm.Client, topic string, partitions, rf, minISR int) error {
	cfg := map[string]*string{}
	if minISR > 0 {
		v := fmt.Sprint(minISR)
		cfg["min.insync.replicas"] = &v
	}
	var last error
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := adm.CreateTopics(cctx, int32(partitions), int16(rf), cfg, topic)
		cancel()
		if err == nil {
			r := resp[topic]
			err = r.Err
			if err != nil && strings.Contains(err.Error(), "TOPIC_ALREADY_EXISTS") {
				return nil
			}
		}
		if err == nil {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("create topic %s: %v", topic, last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}
