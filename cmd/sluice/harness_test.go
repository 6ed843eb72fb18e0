package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicebroker/sluice/internal/testcluster"
)

// The end-to-end tests run the real broker as a child process: the test binary re-executes itself with
// serveArgsEnv set, and TestMain turns into `sluice serve`. That gives real TCP, real files and a
// process to kill -9, without building a second binary.
const serveArgsEnv = "SLUICE_TEST_SERVE_ARGS"

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

// testBroker is one broker process (a testcluster.Node running this test binary as the broker) with
// the test it belongs to.
type testBroker struct {
	*testcluster.Node
	t testing.TB
	// clientOpts are how clients reach this broker (SASL credentials: security_test.go).
	clientOpts []kgo.Opt
}

// serveSelf is the testcluster.Command that runs this test binary as `sluice serve` (see TestMain).
func serveSelf(args []string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), serveArgsEnv+"="+strings.Join(args, "\x1f"))
	return cmd
}

// freePort returns a loopback address whose port was free a moment ago.
var freePort = testcluster.MustFreeAddr

// startBroker runs a broker on fresh loopback ports and a fresh data directory, and waits until it
// answers Kafka requests.
func startBroker(t testing.TB, extra ...string) *testBroker {
	t.Helper()
	b := newTestBroker(t, 0, freePort(t), freePort(t), extra...)
	b.start()
	return b
}

// newTestBroker prepares broker id (0: a single broker's default) on the given ports and a fresh
// data directory without starting it; the test's cleanup stops it and prints its log's tail if the
// test failed.
func newTestBroker(t testing.TB, id int32, addr, raftAddr string, extra ...string) *testBroker {
	t.Helper()
	b := &testBroker{t: t, Node: &testcluster.Node{
		ID:       id,
		Addr:     addr,
		RaftAddr: raftAddr,
		DataDir:  filepath.Join(t.TempDir(), "data"),
		LogPath:  filepath.Join(t.TempDir(), "broker.log"),
		Command:  serveSelf,
	}}
	b.setExtra(extra...)
	t.Cleanup(func() {
		b.stop()
		if t.Failed() {
			if out, err := os.ReadFile(b.LogPath); err == nil {
				lines := strings.Split(string(out), "\n")
				if len(lines) > 60 {
					lines = lines[len(lines)-60:]
				}
				t.Logf("broker %s log (last lines):\n%s", b.Addr, strings.Join(lines, "\n"))
			}
		}
	})
	return b
}

// setExtra sets the broker's flags for its next start: the harness's, then extra.
func (b *testBroker) setExtra(extra ...string) {
	// No initial rebalance delay (Kafka's 3 s) unless a test asks: groups in tests form at once.
	// A 20 ms Raft tick: a new partition elects its leader in 0.2-0.4 s instead of the default's
	// 1-2 s, which tests that create many topics would wait for each time.
	b.Args = append([]string{"--segment-bytes", "8388608", "--log-level", "warn", "--group-initial-rebalance-delay", "0",
		"--raft-tick", "20ms"}, extra...)
}

func (b *testBroker) start() {
	b.t.Helper()
	b.launch()
	b.waitReady()
}

// launch starts the broker process without waiting for it to serve.
func (b *testBroker) launch() {
	b.t.Helper()
	if err := b.Start(); err != nil {
		b.t.Fatal(err)
	}
}

// waitReady polls until the broker answers a metadata request, failing fast if it exits.
func (b *testBroker) waitReady() {
	b.t.Helper()
	exited := b.Exited()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			b.t.Fatalf("broker exited during start-up; log in %s:\n%s", b.LogPath, b.LogTail(4000))
		default:
		}
		if c, err := net.DialTimeout("tcp", b.Addr, 200*time.Millisecond); err == nil {
			c.Close()
			cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(b.Addr)}, b.clientOpts...)...)
			if err == nil {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				err = testcluster.AllPartitionsLed(ctx, kadm.NewClient(cl))
				cancel()
				cl.Close()
				if err == nil {
					return
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.t.Fatalf("broker at %s not ready after 60s:\n%s", b.Addr, b.LogTail(4000))
}

// kill9 kills the broker with SIGKILL: no shutdown code runs.
func (b *testBroker) kill9() { b.Stop(syscall.SIGKILL, time.Minute) }

// stop ends the broker gracefully (SIGTERM, resuming it if paused), killing it if it hangs.
func (b *testBroker) stop() { b.Stop(syscall.SIGTERM, 20*time.Second) }

func (b *testBroker) pause()  { b.Signal(syscall.SIGSTOP) }
func (b *testBroker) resume() { b.Signal(syscall.SIGCONT) }

// client returns a franz-go client on the broker with the given options, closed at test end.
func (b *testBroker) client(opts ...kgo.Opt) *kgo.Client {
	b.t.Helper()
	cl, err := kgo.NewClient(append(append([]kgo.Opt{kgo.SeedBrokers(b.Addr)}, b.clientOpts...), opts...)...)
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

// rawProduce sends one batch in a hand-built ProduceRequest to broker 1 and returns the partition's
// error code.
func rawProduce(ctx context.Context, t *testing.T, cl *kgo.Client, topic string, partition int32, batch []byte) int16 {
	t.Helper()
	code, _ := rawProduceOffset(ctx, t, cl, topic, partition, batch)
	return code
}

// rawProduceOffset is rawProduce that also returns the base offset the broker assigned.
func rawProduceOffset(ctx context.Context, t *testing.T, cl *kgo.Client, topic string, partition int32, batch []byte) (int16, int64) {
	t.Helper()
	code, base, err := testcluster.Produce(ctx, cl.Broker(1), topic, partition, batch)
	if err != nil {
		t.Fatalf("produce request: %v", err)
	}
	return code, base
}

// withMetrics adds a metrics endpoint to a broker's arguments (servingBackend reads it).
func withMetrics(t *testing.T, args ...string) []string {
	t.Helper()
	return append(args, "--metrics-addr", freePort(t))
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// metricsURL is the base URL of a broker's --metrics-addr endpoint (the broker must run withMetrics).
func metricsURL(t *testing.T, b *testBroker) string {
	t.Helper()
	i := slices.Index(b.Args, "--metrics-addr")
	if i < 0 || i+1 >= len(b.Args) {
		t.Fatal("the broker runs without --metrics-addr")
	}
	return "http://" + b.Args[i+1]
}

// scrape reads /metrics and parses the Prometheus text format.
func scrape(t *testing.T, base string) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := httpGet(t, base+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return fams
}

// metricValue finds the series of a family whose labels include the given ones: a counter's or
// gauge's value, a histogram's sample count.
func metricValue(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		for k, v := range labels {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

func strPtr(s string) *string { return &s }

// randomBytes does not compress, so a record's size on the wire is its size (franz-go compresses with
// snappy by default).
func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// checkRecords matches consumed records to produced ones by (partition, offset) and compares every field.
func checkRecords(t *testing.T, sent, got []*kgo.Record) {
	t.Helper()
	if len(got) != len(sent) {
		t.Fatalf("consumed %d records, produced %d", len(got), len(sent))
	}
	type pos struct {
		p int32
		o int64
	}
	byPos := make(map[pos]*kgo.Record, len(got))
	for _, r := range got {
		if _, dup := byPos[pos{r.Partition, r.Offset}]; dup {
			t.Fatalf("record at %d/%d consumed twice", r.Partition, r.Offset)
		}
		byPos[pos{r.Partition, r.Offset}] = r
	}
	for i, s := range sent {
		r, ok := byPos[pos{s.Partition, s.Offset}]
		if !ok {
			t.Fatalf("record %d (partition %d offset %d) not consumed", i, s.Partition, s.Offset)
		}
		if string(r.Key) != string(s.Key) || string(r.Value) != string(s.Value) {
			t.Fatalf("record %d: got key %q value %q, want %q %q", i, r.Key, r.Value, s.Key, s.Value)
		}
		if !r.Timestamp.Equal(s.Timestamp) {
			t.Fatalf("record %d: timestamp %v, want %v", i, r.Timestamp, s.Timestamp)
		}
		if len(r.Headers) != len(s.Headers) {
			t.Fatalf("record %d: %d headers, want %d", i, len(r.Headers), len(s.Headers))
		}
		for j := range s.Headers {
			if r.Headers[j].Key != s.Headers[j].Key || string(r.Headers[j].Value) != string(s.Headers[j].Value) {
				t.Fatalf("record %d header %d: got %v, want %v", i, j, r.Headers[j], s.Headers[j])
			}
		}
	}
}
