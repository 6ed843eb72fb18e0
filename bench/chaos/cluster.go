package main

import (
	"context"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// broker is one `sluice serve` child process. Its data directory survives restarts, so a
// restarted broker recovers from its own disk like a real one.
type broker struct {
	id        int32
	kafkaAddr string
	raftAddr  string
	dir       string
	logPath   string

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{} // closed when the current process has exited
	paused bool
}

type cluster struct {
	bin     string
	voters  string
	extra   []string
	brokers []*broker
}

func newCluster(bin, dataDir string, n, basePort int, extra []string) *cluster {
	c := &cluster{bin: bin, extra: extra}
	var voters []string
	for i := 1; i <= n; i++ {
		b := &broker{
			id:        int32(i),
			kafkaAddr: fmt.Sprintf("127.0.0.1:%d", basePort+100*i+92),
			raftAddr:  fmt.Sprintf("127.0.0.1:%d", basePort+100*i+93),
			dir:       filepath.Join(dataDir, fmt.Sprint(i)),
			logPath:   filepath.Join(dataDir, fmt.Sprintf("broker-%d.log", i)),
		}
		voters = append(voters, fmt.Sprintf("%d@%s", i, b.raftAddr))
		c.brokers = append(c.brokers, b)
	}
	c.voters = strings.Join(voters, ",")
	return c
}

func (c *cluster) addrs() []string {
	var out []string
	for _, b := range c.brokers {
		out = append(out, b.kafkaAddr)
	}
	return out
}

func (c *cluster) byID(id int32) *broker {
	for _, b := range c.brokers {
		if b.id == id {
			return b
		}
	}
	return nil
}

// start launches the broker's process; its output is appended to its log file, with a marker
// line per start so a log can be matched against the fault timeline.
func (c *cluster) start(b *broker) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd != nil {
		return fmt.Errorf("broker %d already running", b.id)
	}
	if err := os.MkdirAll(b.dir, 0o755); err != nil {
		return err
	}
	lf, err := os.OpenFile(b.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(lf, "=== chaos: start broker %d at %s\n", b.id, time.Now().UTC().Format(time.RFC3339Nano))
	args := []string{"serve",
		"--node-id", fmt.Sprint(b.id),
		"--listen", b.kafkaAddr,
		"--raft-addr", b.raftAddr,
		"--controller-voters", c.voters,
		"--data-dir", b.dir,
	}
	args = append(args, c.extra...)
	cmd := exec.Command(c.bin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	// If this command dies, its brokers must not outlive it on the shared machine.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return err
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		lf.Close()
		close(done)
	}()
	b.cmd, b.done, b.paused = cmd, done, false
	return nil
}

// launch starts the broker and waits until its Kafka port accepts connections. Ports in
// 33000-33999 lie in Linux's ephemeral range, so another program's outgoing connection can hold
// one for a while: a broker that exits before listening is started again after a pause.
func (c *cluster) launch(ctx context.Context, b *broker) error {
	for attempt := 1; ; attempt++ {
		if err := c.start(b); err != nil {
			return err
		}
		b.mu.Lock()
		done := b.done
		b.mu.Unlock()
		for {
			conn, err := net.DialTimeout("tcp", b.kafkaAddr, 200*time.Millisecond)
			if err == nil {
				conn.Close()
				return nil
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("broker %d did not start listening on %s: %w", b.id, b.kafkaAddr, ctx.Err())
			case <-done:
			case <-time.After(50 * time.Millisecond):
				continue
			}
			break
		}
		b.mu.Lock()
		b.cmd, b.done, b.paused = nil, nil, false
		b.mu.Unlock()
		if attempt >= 30 {
			return fmt.Errorf("broker %d exited before listening %d times (see %s)", b.id, attempt, b.logPath)
		}
		log.Printf("broker %d exited before listening (port taken?), starting it again", b.id)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// signal sends sig to the running process (no-op when it is down).
func (b *broker) signal(sig syscall.Signal) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd != nil {
		_ = b.cmd.Process.Signal(sig)
		switch sig {
		case syscall.SIGSTOP:
			b.paused = true
		case syscall.SIGCONT:
			b.paused = false
		}
	}
}

// stop sends sig and waits for the process to exit; after timeout it is killed.
func (b *broker) stop(sig syscall.Signal, timeout time.Duration) {
	b.mu.Lock()
	cmd, done := b.cmd, b.done
	b.mu.Unlock()
	if cmd == nil {
		return
	}
	if b.paused && sig != syscall.SIGKILL {
		_ = cmd.Process.Signal(syscall.SIGCONT)
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(timeout):
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-done
	}
	b.mu.Lock()
	b.cmd, b.done, b.paused = nil, nil, false
	b.mu.Unlock()
}

func (b *broker) running() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cmd != nil
}

// shutdown resumes paused brokers and stops every broker gracefully (killing stragglers).
func (c *cluster) shutdown() {
	var wg sync.WaitGroup
	for _, b := range c.brokers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.stop(syscall.SIGTERM, 20*time.Second)
		}()
	}
	wg.Wait()
}

func waitPort(ctx context.Context, addr string) error {
	for {
		conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			conn.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not accept connections: %w", addr, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
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
