package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The end-to-end tests run the real broker as a child process: the test binary re-executes itself with
// serveArgsEnv set, and TestMain turns into `sluice serve`. That gives real TCP, real files and a
// process to kill -9, without building a second binary.
const serveArgsEnv = "SLUICE_TEST_SERVE_ARGS"

// raftLogEnv, when set, runs every test broker on that Raft log store (`--raft-log`): CI runs the
// end-to-end suites on each store until one remains.
const raftLogEnv = "SLUICE_TEST_RAFT_LOG"

func TestMain(m *testing.M) {
	if args, ok := os.LookupEnv(serveArgsEnv); ok {
		if err := serve(strings.Split(args, "\x1f")); err != nil {
			fmt.Fprintln(os.Stderr, "serve:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// testBroker is one broker process with its data directory and ports, kept across restarts (dragonboat
// requires a node to come back on the same Raft address).
type testBroker struct {
	t        testing.TB
	dataDir  string
	addr     string // Kafka listener, 127.0.0.1:port
	raftAddr string
	extra    []string
	cmd      *exec.Cmd
	logPath  string
	exited   chan struct{}
}

func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startBroker runs a broker on fresh loopback ports and a fresh data directory, and waits until it
// answers Kafka requests.
func startBroker(t testing.TB, extra ...string) *testBroker {
	t.Helper()
	b := newTestBroker(t, freePort(t), freePort(t), extra...)
	b.start()
	return b
}

// newTestBroker prepares a broker on the given ports and a fresh data directory without starting it;
// the test's cleanup stops it and prints its log's tail if the test failed.
func newTestBroker(t testing.TB, addr, raftAddr string, extra ...string) *testBroker {
	t.Helper()
	b := &testBroker{
		t:        t,
		dataDir:  filepath.Join(t.TempDir(), "data"),
		addr:     addr,
		raftAddr: raftAddr,
		extra:    extra,
	}
	b.logPath = filepath.Join(t.TempDir(), "broker.log")
	t.Cleanup(func() {
		b.stop()
		if t.Failed() {
			if out, err := os.ReadFile(b.logPath); err == nil {
				lines := strings.Split(string(out), "\n")
				if len(lines) > 60 {
					lines = lines[len(lines)-60:]
				}
				t.Logf("broker %s log (last lines):\n%s", b.addr, strings.Join(lines, "\n"))
			}
		}
	})
	return b
}

func (b *testBroker) start() {
	b.t.Helper()
	b.launch()
	b.waitReady()
}

// launch starts the broker process without waiting for it to serve.
func (b *testBroker) launch() {
	b.t.Helper()
	args := append([]string{
		"--listen", b.addr,
		"--raft-addr", b.raftAddr,
		"--data-dir", b.dataDir,
		"--segment-bytes", "8388608",
		"--log-level", "warn",
	}, b.extra...)
	if store := os.Getenv(raftLogEnv); store != "" && !slices.Contains(args, "--raft-log") {
		args = append(args, "--raft-log", store)
	}
	logf, err := os.OpenFile(b.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		b.t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), serveArgsEnv+"="+strings.Join(args, "\x1f"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		b.t.Fatal(err)
	}
	logf.Close()
	b.cmd = cmd
	b.exited = make(chan struct{})
	go func() { _ = cmd.Wait(); close(b.exited) }()
}

// waitReady polls until the broker answers a metadata request, failing fast if it exits.
func (b *testBroker) waitReady() {
	b.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-b.exited:
			b.t.Fatalf("broker exited during start-up; log in %s:\n%s", b.logPath, readTail(b.logPath))
		default:
		}
		if c, err := net.DialTimeout("tcp", b.addr, 200*time.Millisecond); err == nil {
			c.Close()
			cl, err := kgo.NewClient(kgo.SeedBrokers(b.addr))
			if err == nil {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				err = allPartitionsLed(ctx, kadm.NewClient(cl))
				cancel()
				cl.Close()
				if err == nil {
					return
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.t.Fatalf("broker at %s not ready after 60s:\n%s", b.addr, readTail(b.logPath))
}

// allPartitionsLed is true once every partition the broker has restarted has elected its leader.
func allPartitionsLed(ctx context.Context, adm *kadm.Client) error {
	td, err := adm.ListTopics(ctx)
	if err != nil {
		return err
	}
	for _, t := range td {
		if t.Err != nil {
			return t.Err
		}
		for _, p := range t.Partitions {
			if p.Err != nil || p.Leader < 0 {
				return fmt.Errorf("%s/%d has no leader yet", t.Topic, p.Partition)
			}
		}
	}
	return nil
}

func readTail(path string) string {
	out, _ := os.ReadFile(path)
	s := string(out)
	if len(s) > 4000 {
		s = s[len(s)-4000:]
	}
	return s
}

// kill9 kills the broker with SIGKILL: no shutdown code runs.
func (b *testBroker) kill9() {
	b.t.Helper()
	if b.cmd == nil {
		return
	}
	_ = b.cmd.Process.Signal(syscall.SIGKILL)
	<-b.exited
	b.cmd = nil
}

// stop ends the broker gracefully (SIGTERM), killing it if it hangs.
func (b *testBroker) stop() {
	if b.cmd == nil {
		return
	}
	_ = b.cmd.Process.Signal(syscall.SIGCONT) // in case a test paused it
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.exited:
	case <-time.After(20 * time.Second):
		_ = b.cmd.Process.Signal(syscall.SIGKILL)
		<-b.exited
	}
	b.cmd = nil
}

// client returns a franz-go client on the broker with the given options, closed at test end.
func (b *testBroker) client(opts ...kgo.Opt) *kgo.Client {
	b.t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(b.addr)}, opts...)...)
	if err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(cl.Close)
	return cl
}

func (b *testBroker) admin() *kadm.Client { return kadm.NewClient(b.client()) }

// createTopic creates a topic and fails the test on any error.
func (b *testBroker) createTopic(name string, partitions int32, configs map[string]*string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := b.admin().CreateTopic(ctx, partitions, 1, configs, name)
	if err != nil {
		b.t.Fatalf("create topic %s: %v", name, err)
	}
	if resp.Err != nil {
		b.t.Fatalf("create topic %s: %v %s", name, resp.Err, resp.ErrMessage)
	}
}

// consumeAll reads every record of the given partitions from the start up to their end offsets at call
// time.
func consumeAll(t testing.TB, b *testBroker, topic string, opts ...kgo.Opt) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ends, err := b.admin().ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int32]int64{}
	var total int64
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			t.Fatalf("end offset %s/%d: %v", o.Topic, o.Partition, o.Err)
		}
		want[o.Partition] = o.Offset
		total += o.Offset
	})
	cl := b.client(append([]kgo.Opt{
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	}, opts...)...)
	var out []*kgo.Record
	got := map[int32]int64{}
	for int64(len(out)) < total {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consumed %d of %d records before timing out", len(out), total)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset < want[r.Partition] {
				out = append(out, r)
				got[r.Partition]++
			}
		})
	}
	return out
}

// requireKcat returns kcat's path. CI installs kcat (.ci/run) and fails without it; a developer
// machine without it skips.
func requireKcat(t testing.TB) string {
	t.Helper()
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("kcat is not installed; .ci/run installs it")
		}
		t.Skip("kcat not installed (apt-get install -y kcat)")
	}
	return kcat
}

// lines reads a text stream into lines.
func lines(s string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if sc.Text() != "" {
			out = append(out, sc.Text())
		}
	}
	return out
}
