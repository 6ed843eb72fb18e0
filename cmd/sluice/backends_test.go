package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/IBM/sarama"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sys/unix"

	"github.com/sluicebroker/sluice/netio"
)

// denyIOUringEnv makes a broker child process refuse io_uring_setup(2) with EPERM through a seccomp
// filter, as a container runtime's default profile does: the real detection path, no test hook in
// netio.
const denyIOUringEnv = "SLUICE_TEST_DENY_IO_URING"

func init() {
	if os.Getenv(serveArgsEnv) == "" || os.Getenv(denyIOUringEnv) != "1" {
		return
	}
	if err := denyIOUringSetup(); err != nil {
		fmt.Fprintln(os.Stderr, "seccomp:", err)
		os.Exit(3)
	}
}

// denyIOUringSetup installs, on every thread of the process, a seccomp filter under which
// io_uring_setup fails with EPERM and every other system call is allowed.
func denyIOUringSetup() error {
	const (
		seccompSetModeFilter = 1
		seccompFlagTsync     = 1
		retErrno             = 0x00050000
		retAllow             = 0x7fff0000
	)
	prog := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 0}, // seccomp_data.nr
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 1, K: unix.SYS_IO_URING_SETUP},
		{Code: unix.BPF_RET | unix.BPF_K, K: retErrno | uint32(unix.EPERM)},
		{Code: unix.BPF_RET | unix.BPF_K, K: retAllow},
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	// no_new_privs is per thread: set it and install the filter on the same one; TSYNC copies both.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	if _, _, errno := unix.Syscall(unix.SYS_SECCOMP, seccompSetModeFilter, seccompFlagTsync, uintptr(unsafe.Pointer(&fprog))); errno != 0 {
		return fmt.Errorf("seccomp: %w", errno)
	}
	return nil
}

// testBackends are the network backends every machine is tested on.
var testBackends = []string{"std", "gnet", "uring"}

// requireBackend skips the test where the backend cannot run here (io_uring disabled by sysctl,
// seccomp or an old kernel), visibly; in CI (CI set, as for kcat) that fails instead: uring is the
// default backend and must not go untested without anyone noticing.
func requireBackend(t *testing.T, backend string) {
	t.Helper()
	if backend != "uring" {
		return
	}
	if err := netio.UringAvailable(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("io_uring unavailable on this CI host, so the default backend goes untested: %v", err)
		}
		t.Skipf("io_uring unavailable here: %v", err)
	}
}

// servingBackend asks the broker which network backend serves its plaintext listener: the backend
// label of its plaintext connections gauge on /metrics (the broker must run withMetrics).
func servingBackend(t *testing.T, b *testBroker) string {
	t.Helper()
	base := metricsURL(t, b)
	fams := scrape(t, base)
	for _, m := range fams["sluice_connections"].GetMetric() {
		labels := map[string]string{}
		for _, lp := range m.GetLabel() {
			labels[lp.GetName()] = lp.GetValue()
		}
		if labels["listener"] == "plaintext" {
			return labels["backend"]
		}
	}
	t.Fatalf("no plaintext listener in sluice_connections on %s", base)
	return ""
}

// withMetrics adds a metrics endpoint to a broker's arguments (servingBackend reads it).
func withMetrics(t *testing.T, args ...string) []string {
	t.Helper()
	return append(args, "--metrics-addr", freePort(t))
}

// TestBackendClients runs the real clients (franz-go, sarama, kafka-go, kcat) against one broker per
// network backend: produce and consume through each, pipelined requests, a record larger than the
// backends' read buffers and fetches served as file ranges.
func TestBackendClients(t *testing.T) {
	for _, backend := range testBackends {
		t.Run(backend, func(t *testing.T) {
			requireBackend(t, backend)
			b := startBroker(t, withMetrics(t, "--netio", backend, "--log-level", "info")...)
			if got := servingBackend(t, b); got != backend {
				t.Fatalf("broker serves with %s, want %s", got, backend)
			}
			t.Run("franz-go", func(t *testing.T) { franzRoundTrip(t, b, backend) })
			t.Run("sarama", func(t *testing.T) { saramaRoundTrip(t, b) })
			t.Run("kafka-go", func(t *testing.T) { kafkaGoRoundTrip(t, b) })
			t.Run("kcat", func(t *testing.T) { kcatRoundTrip(t, b) })
		})
	}
}

// franzRoundTrip produces keyed records pipelined (linger, 5 requests in flight) with lz4, plus a
// 900 KiB record, and reads every one back.
func franzRoundTrip(t *testing.T, b *testBroker, backend string) {
	const topic = "franz"
	b.createTopic(topic, 4, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	base := time.UnixMilli(1700000000000)
	var sent []*kgo.Record
	for i := range 3000 {
		sent = append(sent, &kgo.Record{Topic: topic, Key: []byte(fmt.Sprint(i % 31)), Value: []byte(fmt.Sprintf("%s-%d", backend, i)),
			Headers: []kgo.RecordHeader{{Key: "i", Value: []byte(fmt.Sprint(i))}}, Timestamp: base.Add(time.Duration(i) * time.Millisecond)})
	}
	big := make([]byte, 900<<10)
	for i := range big {
		big[i] = byte(i * 7)
	}
	sent = append(sent, &kgo.Record{Topic: topic, Key: []byte("big"), Value: big, Timestamp: base.Add(time.Hour)})
	prod := b.client(kgo.ProducerBatchCompression(kgo.Lz4Compression()), kgo.ProducerLinger(2*time.Millisecond))
	if err := prod.ProduceSync(ctx, sent...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	checkRecords(t, sent, consumeAll(t, b, topic))
}

// saramaRoundTrip sends with sarama's idempotent sync producer and reads each partition back.
func saramaRoundTrip(t *testing.T, b *testBroker) {
	const topic, n = "sarama", 200
	b.createTopic(topic, 2, nil)
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V3_6_0_0
	cfg.Producer.Return.Successes = true
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Idempotent = true
	cfg.Net.MaxOpenRequests = 1
	cfg.Producer.Compression = sarama.CompressionSnappy
	cfg.Producer.Partitioner = sarama.NewHashPartitioner
	prod, err := sarama.NewSyncProducer([]string{b.Addr}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	msgs := make([]*sarama.ProducerMessage, n)
	for i := range msgs {
		msgs[i] = &sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder(fmt.Sprintf("k%d", i%7)), Value: sarama.StringEncoder(fmt.Sprintf("sarama-%d", i))}
	}
	if err := prod.SendMessages(msgs); err != nil {
		t.Fatalf("send: %v", err)
	}
	cons, err := sarama.NewConsumer([]string{b.Addr}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	want := map[[2]int64]string{}
	perPartition := map[int32]int{}
	for i, m := range msgs {
		want[[2]int64{int64(m.Partition), m.Offset}] = fmt.Sprintf("k%d=sarama-%d", i%7, i)
		perPartition[m.Partition]++
	}
	for p, count := range perPartition {
		pc, err := cons.ConsumePartition(topic, p, sarama.OffsetOldest)
		if err != nil {
			t.Fatal(err)
		}
		timeout := time.After(30 * time.Second)
		for i := range count {
			select {
			case m := <-pc.Messages():
				if got, w := string(m.Key)+"="+string(m.Value), want[[2]int64{int64(m.Partition), m.Offset}]; got != w {
					t.Fatalf("partition %d offset %d: %q, want %q", m.Partition, m.Offset, got, w)
				}
			case err := <-pc.Errors():
				t.Fatalf("partition %d: %v", p, err)
			case <-timeout:
				t.Fatalf("partition %d: %d of %d messages", p, i, count)
			}
		}
		pc.Close()
	}
}

// kafkaGoRoundTrip writes with kafka-go's Writer (zstd) and reads back with its Reader.
func kafkaGoRoundTrip(t *testing.T, b *testBroker) {
	const topic, n = "kafkago", 150
	b.createTopic(topic, 1, nil)
	w := &kafka.Writer{Addr: kafka.TCP(b.Addr), Topic: topic, RequiredAcks: kafka.RequireAll, BatchTimeout: 5 * time.Millisecond,
		BatchSize: 50, Compression: kafka.Zstd, Transport: &kafka.Transport{}}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	msgs := make([]kafka.Message, n)
	for i := range msgs {
		msgs[i] = kafka.Message{Key: []byte(fmt.Sprintf("k%d", i)), Value: []byte(fmt.Sprintf("kafka-go-%d", i))}
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatalf("write: %v", err)
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{b.Addr}, Topic: topic, Partition: 0, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	for i := range n {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		if m.Offset != int64(i) || string(m.Key) != fmt.Sprintf("k%d", i) || string(m.Value) != fmt.Sprintf("kafka-go-%d", i) {
			t.Fatalf("message %d: offset %d key %q value %q", i, m.Offset, m.Key, m.Value)
		}
	}
}

// kcatRoundTrip produces (idempotent, with the extra producer flags given) and consumes keyed lines
// through librdkafka's kcat.
func kcatRoundTrip(t *testing.T, b *testBroker, produceFlags ...string) {
	kcat := requireKcat(t)
	const topic, n = "kcat", 100
	b.createTopic(topic, 1, nil)
	var in strings.Builder
	for i := range n {
		fmt.Fprintf(&in, "key%d:value %d\n", i, i)
	}
	prod := exec.Command(kcat, append([]string{"-b", b.Addr, "-t", topic, "-P", "-K:", "-X", "enable.idempotence=true"}, produceFlags...)...)
	prod.Stdin = strings.NewReader(in.String())
	if out, err := prod.CombinedOutput(); err != nil {
		t.Fatalf("kcat produce: %v\n%s", err, out)
	}
	out, err := exec.Command(kcat, "-b", b.Addr, "-t", topic, "-C", "-o", "beginning", "-e", "-f", "%o %k:%s\n").Output()
	if err != nil {
		t.Fatalf("kcat consume: %v", err)
	}
	got := lines(string(out))
	if len(got) != n {
		t.Fatalf("kcat consumed %d lines, want %d:\n%s", len(got), n, out)
	}
	for i, l := range got {
		if want := fmt.Sprintf("%d key%d:value %d", i, i, i); l != want {
			t.Fatalf("line %d: %q, want %q", i, l, want)
		}
	}
}

// TestNetioAutoFallback runs a broker with --netio auto under a seccomp filter that refuses io_uring:
// it serves with gnet and says why in exactly one log line. Without the filter auto picks io_uring.
func TestNetioAutoFallback(t *testing.T) {
	if err := netio.UringAvailable(); err != nil {
		t.Skipf("io_uring unavailable here already: %v", err)
	}
	b := startBroker(t, withMetrics(t, "--netio", "auto", "--log-level", "info")...)
	if got := servingBackend(t, b); got != "uring" {
		t.Fatalf("auto serves with %s where io_uring runs, want uring", got)
	}
	b.stop()

	t.Setenv(denyIOUringEnv, "1") // inherited by the broker process
	b = startBroker(t, withMetrics(t, "--netio", "auto", "--log-level", "info")...)
	if got := servingBackend(t, b); got != "gnet" {
		t.Fatalf("auto serves with %s under a filter refusing io_uring, want gnet", got)
	}
	out, err := os.ReadFile(b.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	var fallback []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(strings.ToLower(l), "io_uring") {
			fallback = append(fallback, l)
		}
	}
	if len(fallback) != 1 || !strings.Contains(fallback[0], "falls back to gnet") || !strings.Contains(fallback[0], "operation not permitted") {
		t.Fatalf("want exactly one log line on the fallback naming its cause, got %d:\n%s", len(fallback), strings.Join(fallback, "\n"))
	}
	// And it serves.
	b.createTopic("after-fallback", 1, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := &kgo.Record{Topic: "after-fallback", Value: []byte("v"), Timestamp: time.UnixMilli(1700000000000)}
	if err := b.client().ProduceSync(ctx, r).FirstErr(); err != nil {
		t.Fatal(err)
	}
	checkRecords(t, []*kgo.Record{r}, consumeAll(t, b, "after-fallback"))
}
