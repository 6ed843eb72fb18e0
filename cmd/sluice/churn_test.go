package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestConnectionChurn opens and closes connections fast against one broker per network backend, as
// serverless producers, health checks, kcat in scripts and connection-per-request tools do: franz-go
// clients created, used (Metadata, ProduceSync) and closed one after another and 20 at a time, kcat
// runs (metadata, produce) one after another, raw dials closed without a byte, and connections closed in the middle of a request or before its
// answer. Every client must be served, and afterwards the broker must hold as many descriptors and
// connections as before: none leaked, none left in CLOSE_WAIT.
func TestConnectionChurn(t *testing.T) {
	for _, backend := range testBackends {
		t.Run(backend, func(t *testing.T) {
			requireBackend(t, backend)
			b := startBroker(t, withMetrics(t, "--netio", backend)...)
			const topic = "churn"
			createTopicClosed(t, b, topic)
			// churn-big: a partition of 4 MiB, for fetches cut short.
			big := make([]*kgo.Record, 32)
			for i := range big {
				big[i] = &kgo.Record{Topic: "churn-big", Value: make([]byte, 128<<10)}
			}
			createTopicClosed(t, b, "churn-big")
			cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr), kgo.ProducerBatchMaxBytes(1<<20))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err = cl.ProduceSync(ctx, big...).FirstErr()
			cancel()
			cl.Close()
			if err != nil {
				t.Fatal(err)
			}
			// One whole fetch of churn-big, so that files opened on a read count in the baseline too.
			if err := fetchAll(b.Addr, "churn-big"); err != nil {
				t.Fatal(err)
			}
			// One client's worth of work first, so files the broker opens lazily count in the baseline.
			if err := churnClient(b, topic, 0); err != nil {
				t.Fatal(err)
			}
			base := settledFDs(t, b, nil)

			check := func(t *testing.T) {
				t.Helper()
				if err := churnClient(b, topic, -1); err != nil {
					t.Fatalf("broker no longer serves after the churn: %v", err)
				}
				settledFDs(t, b, base)
				if n := closeWait(t, b); n != 0 {
					t.Fatalf("%d sockets of the broker's port in CLOSE_WAIT after the clients closed", n)
				}
				deadline := time.Now().Add(10 * time.Second)
				for n := brokerConnections(t, b); n != 0; n = brokerConnections(t, b) {
					if time.Now().After(deadline) {
						t.Fatalf("sluice_connections = %d 10 s after every client closed", n)
					}
					time.Sleep(100 * time.Millisecond)
				}
			}

			t.Run("franz-go sequential", func(t *testing.T) {
				for i := range 300 {
					if err := churnClient(b, topic, i); err != nil {
						t.Fatalf("client %d: %v", i, err)
					}
				}
				check(t)
			})
			t.Run("franz-go 20 at a time", func(t *testing.T) {
				var (
					next   atomic.Int64
					failed atomic.Int64
					first  sync.Once
					err1   error
					wg     sync.WaitGroup
				)
				for range 20 {
					wg.Go(func() {
						for i := int(next.Add(1)); i <= 400; i = int(next.Add(1)) {
							if err := churnClient(b, topic, i); err != nil {
								failed.Add(1)
								first.Do(func() { err1 = fmt.Errorf("client %d: %w", i, err) })
							}
						}
					})
				}
				wg.Wait()
				if n := failed.Load(); n > 0 {
					t.Fatalf("%d of 400 clients failed; first: %v", n, err1)
				}
				check(t)
			})
			t.Run("kcat in a script", func(t *testing.T) {
				kcat := requireKcat(t)
				for i := range 40 {
					var cmd *exec.Cmd
					if i%2 == 0 {
						cmd = exec.Command(kcat, "-b", b.Addr, "-L", "-t", topic)
					} else {
						cmd = exec.Command(kcat, "-b", b.Addr, "-P", "-t", topic)
						cmd.Stdin = strings.NewReader(fmt.Sprintf("kcat %d\n", i))
					}
					if out, err := cmd.CombinedOutput(); err != nil {
						t.Fatalf("kcat run %d: %v\n%s", i, err, out)
					}
				}
				check(t)
			})
			t.Run("raw dial and close", func(t *testing.T) {
				for i := range 500 {
					c, err := net.DialTimeout("tcp", b.Addr, 5*time.Second)
					if err != nil {
						t.Fatalf("dial %d: %v", i, err)
					}
					if i%2 == 1 {
						_ = c.(*net.TCPConn).SetLinger(0) // RST instead of FIN
					}
					c.Close()
				}
				check(t)
			})
			t.Run("close mid-fetch-response", func(t *testing.T) {
				// Each connection asks for all of churn-big and goes away after the first KiB, while the
				// broker sends the file ranges.
				var first [1024]byte
				for i := range 60 {
					c, err := net.DialTimeout("tcp", b.Addr, 5*time.Second)
					if err != nil {
						t.Fatalf("dial %d: %v", i, err)
					}
					_ = c.SetDeadline(time.Now().Add(10 * time.Second))
					if _, err := c.Write(fetchFrame(int32(i), "churn-big", 8<<20)); err != nil {
						t.Fatalf("write %d: %v", i, err)
					}
					if _, err := io.ReadFull(c, first[:]); err != nil {
						t.Fatalf("read %d: %v", i, err)
					}
					if i%2 == 0 {
						_ = c.(*net.TCPConn).SetLinger(0)
					}
					c.Close()
				}
				check(t)
			})
			t.Run("close mid-request", func(t *testing.T) {
				for i := range 300 {
					c, err := net.DialTimeout("tcp", b.Addr, 5*time.Second)
					if err != nil {
						t.Fatalf("dial %d: %v", i, err)
					}
					req := metadataFrame(int32(i))
					switch i % 4 {
					case 0: // cut inside the frame's body
						_, err = c.Write(req[:len(req)-3])
					case 1: // cut inside the length prefix
						_, err = c.Write(req[:2])
					case 2: // a whole request, gone before the answer
						_, err = c.Write(req)
					case 3: // many requests pipelined, gone before the answers, with a reset
						var many []byte
						for j := range 50 {
							many = append(many, metadataFrame(int32(j))...)
						}
						_, err = c.Write(many)
						_ = c.(*net.TCPConn).SetLinger(0)
					}
					if err != nil {
						t.Fatalf("write %d: %v", i, err)
					}
					c.Close()
				}
				check(t)
			})
		})
	}
}

// churnClient is one short-lived franz-go client: created, Metadata, one acknowledged record, closed.
// opts come last (another listener's seed and TLS, other credentials).
func churnClient(b *testBroker, topic string, i int, opts ...kgo.Opt) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(append(append([]kgo.Opt{kgo.SeedBrokers(b.Addr), kgo.DialTimeout(5 * time.Second)}, b.clientOpts...), opts...)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	if _, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl); err != nil {
		return fmt.Errorf("metadata: %w", err)
	}
	r := &kgo.Record{Topic: topic, Value: []byte(strconv.Itoa(i))}
	if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
		return fmt.Errorf("produce: %w", err)
	}
	return nil
}

// metadataFrame is a Metadata v1 request for every topic (a non-flexible header), length prefix
// included.
func metadataFrame(corr int32) []byte {
	var body []byte
	body = binary.BigEndian.AppendUint16(body, uint16(kmsg.Metadata))
	body = binary.BigEndian.AppendUint16(body, 1)
	body = binary.BigEndian.AppendUint32(body, uint32(corr))
	body = binary.BigEndian.AppendUint16(body, 5)
	body = append(body, "churn"...)
	body = binary.BigEndian.AppendUint32(body, 0xffffffff) // null topics: all
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

// fetchFrame is a Fetch v4 request (a non-flexible header) for partition 0 of topic from offset 0,
// up to maxBytes, not waiting; length prefix included.
func fetchFrame(corr int32, topic string, maxBytes int32) []byte {
	req := kmsg.NewPtrFetchRequest()
	req.Version = 4
	req.ReplicaID = -1
	req.MinBytes = 1
	req.MaxBytes = maxBytes
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.PartitionMaxBytes = maxBytes
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	var body []byte
	body = binary.BigEndian.AppendUint16(body, uint16(kmsg.Fetch))
	body = binary.BigEndian.AppendUint16(body, 4)
	body = binary.BigEndian.AppendUint32(body, uint32(corr))
	body = binary.BigEndian.AppendUint16(body, 5)
	body = append(body, "churn"...)
	body = req.AppendTo(body)
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

// fetchAll sends one Fetch of partition 0 of topic from offset 0 and reads the whole response.
func fetchAll(addr, topic string) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write(fetchFrame(1, topic, 8<<20)); err != nil {
		return err
	}
	var size [4]byte
	if _, err := io.ReadFull(c, size[:]); err != nil {
		return err
	}
	_, err = io.CopyN(io.Discard, c, int64(binary.BigEndian.Uint32(size[:])))
	return err
}

// brokerFDs lists the broker process's open descriptors: what each points to. io_uring rings and
// eventfds are left out: they belong to the network backend's loops, a fixed number, never to a
// connection.
func brokerFDs(t *testing.T, b *testBroker) []string {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", b.Pid())
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var fds []string
	for _, e := range ents {
		target, _ := os.Readlink(dir + "/" + e.Name())
		if target == "anon_inode:[io_uring]" || target == "anon_inode:[eventfd]" {
			continue
		}
		fds = append(fds, e.Name()+" -> "+target)
	}
	return fds
}

// settledFDs waits until the broker's descriptors stop changing (want nil) or come back to as many as
// want, and returns them; it fails the test, naming the new ones, if want is not reached within 10 s.
func settledFDs(t *testing.T, b *testBroker, want []string) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	last, stable := -1, 0
	for {
		fds := brokerFDs(t, b)
		n := len(fds)
		if want != nil && n <= len(want) {
			return fds
		}
		if n == last {
			stable++
		} else {
			last, stable = n, 0
		}
		if want == nil && stable >= 5 {
			return fds
		}
		if time.Now().After(deadline) {
			if want != nil {
				var extra []string
				for _, fd := range fds {
					if !slices.Contains(want, fd) {
						extra = append(extra, fd)
					}
				}
				t.Fatalf("broker holds %d descriptors 10 s after the clients closed, %d before: leaked? new: %v", n, len(want), extra)
			}
			return fds
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// closeWait counts the sockets on the broker's port in CLOSE_WAIT (the peer closed, the broker did
// not), from /proc/net/tcp and tcp6.
func closeWait(t *testing.T, b *testBroker) int { return closeWaitOn(t, b.Addr) }

// closeWaitOn counts the sockets on addr's port in CLOSE_WAIT.
func closeWaitOn(t *testing.T, addr string) int {
	t.Helper()
	_, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(portStr)
	local := fmt.Sprintf(":%04X", port)
	n := 0
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		fh, err := os.Open(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			// sl local_address rem_address st ...; CLOSE_WAIT is 08.
			if len(fields) > 3 && strings.HasSuffix(fields[1], local) && fields[3] == "08" {
				n++
			}
		}
		fh.Close()
	}
	return n
}

// brokerConnections is the broker's plaintext connections gauge, read over a connection that is not
// kept alive (it would count among the broker's descriptors).
func brokerConnections(t *testing.T, b *testBroker) int {
	return listenerConnections(t, b, "plaintext")
}

// listenerConnections is the broker's connections gauge of one listener (plaintext, tls,
// sasl_plaintext), read over a connection that is not kept alive.
func listenerConnections(t *testing.T, b *testBroker, listener string) int {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := hc.Get(metricsURL(t, b) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	for _, m := range fams["sluice_connections"].GetMetric() {
		for _, lp := range m.GetLabel() {
			if lp.GetName() == "listener" && lp.GetValue() == listener {
				return int(m.GetGauge().GetValue())
			}
		}
	}
	t.Fatalf("no %s listener in sluice_connections", listener)
	return 0
}

// TestAcceptAtOpenFilesLimit: clients that open more connections than the broker has descriptors
// left (prlimit 300) must not take the listener down: once they close, new clients are served again, on
// every backend, and the broker says so in a few log lines rather than one per retry.
func TestAcceptAtOpenFilesLimit(t *testing.T) {
	if _, err := exec.LookPath("prlimit"); err != nil {
		t.Skip("prlimit (util-linux) not installed")
	}
	const limit = 300 // room for the broker's own files and the CreateTopics guard's reserve
	for _, backend := range testBackends {
		t.Run(backend, func(t *testing.T) {
			requireBackend(t, backend)
			b := newTestBroker(t, 0, freePort(t), freePort(t), withMetrics(t, "--netio", backend)...)
			b.Command = func(args []string) *exec.Cmd {
				self := serveSelf(args)
				cmd := exec.Command("prlimit", append([]string{fmt.Sprintf("--nofile=%d:%d", limit, limit), "--", self.Path}, self.Args[1:]...)...)
				cmd.Env = self.Env
				return cmd
			}
			b.start()
			const topic = "at-limit"
			createTopicClosed(t, b, topic)
			if err := churnClient(b, topic, 0); err != nil {
				t.Fatal(err)
			}
			base := settledFDs(t, b, nil)

			// More connections than descriptors left: the kernel completes the handshakes, the
			// broker runs out of descriptors accepting them.
			var held []net.Conn
			for range limit + 150 {
				c, err := net.DialTimeout("tcp", b.Addr, 2*time.Second)
				if err != nil {
					break // refused: the listener is gone (the failure checked below)
				}
				held = append(held, c)
			}
			deadline := time.Now().Add(5 * time.Second)
			for len(brokerFDs(t, b)) < limit-5 && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			time.Sleep(500 * time.Millisecond) // accepts fail (EMFILE) for a while
			for _, c := range held {
				c.Close()
			}

			// Served again: a new client succeeds, within the time a client retries a dial.
			var err error
			for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
				if err = churnClient(b, topic, 1); err == nil {
					break
				}
			}
			if err != nil {
				t.Fatalf("no longer served after running out of descriptors: %v", err)
			}
			settledFDs(t, b, base)
			if n := closeWait(t, b); n != 0 {
				t.Fatalf("%d sockets of the broker's port in CLOSE_WAIT", n)
			}
			log, err := os.ReadFile(b.LogPath)
			if err != nil {
				t.Fatal(err)
			}
			if n := strings.Count(string(log), "accept"); n > 20 {
				t.Fatalf("%d log lines about accept for one episode of running out of descriptors: throttle them", n)
			}
		})
	}
}

// createTopicClosed creates a one-partition topic with a client closed at once, so that no connection
// of the test's stays open.
func createTopicClosed(t *testing.T, b *testBroker, topic string) {
	t.Helper()
	admin, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(b.Addr)}, b.clientOpts...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := kadm.NewClient(admin).CreateTopic(ctx, 1, 1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatal(err)
	}
}

// TestConnectionChurnSecure: the same churn on a broker with a TLS listener (std backend) and SASL
// required on both listeners (the plaintext one on the default backend): franz-go clients logging in
// with SCRAM over TLS and over plaintext, failed logins, TCP connections to the TLS port closed before,
// during and after the handshake. Every good client is served, every bad one refused, and the
// descriptors, connection gauges and CLOSE_WAIT sockets come back to the baseline.
func TestConnectionChurnSecure(t *testing.T) {
	b := startSecureBroker(t, withMetrics(t)...)
	const topic = "churn-secure"
	createTopicClosed(t, b.testBroker, topic)
	overTLS := []kgo.Opt{kgo.SeedBrokers(b.TLSAddr), kgo.DialTLSConfig(b.pki.clientTLS())}
	if err := churnClient(b.testBroker, topic, 0, overTLS...); err != nil {
		t.Fatal(err)
	}
	base := settledFDs(t, b.testBroker, nil)
	check := func(t *testing.T) {
		t.Helper()
		if err := churnClient(b.testBroker, topic, -1, overTLS...); err != nil {
			t.Fatalf("broker no longer serves over TLS after the churn: %v", err)
		}
		settledFDs(t, b.testBroker, base)
		for _, addr := range []string{b.Addr, b.TLSAddr} {
			if n := closeWaitOn(t, addr); n != 0 {
				t.Fatalf("%d sockets of %s in CLOSE_WAIT after the clients closed", n, addr)
			}
		}
		deadline := time.Now().Add(10 * time.Second)
		for _, l := range []string{"tls", "sasl_plaintext"} {
			for n := listenerConnections(t, b.testBroker, l); n != 0; n = listenerConnections(t, b.testBroker, l) {
				if time.Now().After(deadline) {
					t.Fatalf("sluice_connections{listener=%s} = %d 10 s after every client closed", l, n)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}

	t.Run("SCRAM over TLS, 20 at a time", func(t *testing.T) {
		var (
			next, failed atomic.Int64
			first        sync.Once
			err1         error
			wg           sync.WaitGroup
		)
		for range 20 {
			wg.Go(func() {
				for i := int(next.Add(1)); i <= 200; i = int(next.Add(1)) {
					opts := overTLS
					if i%2 == 0 { // and over the plaintext SASL listener
						opts = nil
					}
					if err := churnClient(b.testBroker, topic, i, opts...); err != nil {
						failed.Add(1)
						first.Do(func() { err1 = fmt.Errorf("client %d: %w", i, err) })
					}
				}
			})
		}
		wg.Wait()
		if n := failed.Load(); n > 0 {
			t.Fatalf("%d of 200 clients failed; first: %v", n, err1)
		}
		check(t)
	})
	t.Run("failed logins", func(t *testing.T) {
		// Not churnClient: its options carry the good credentials (kgo.SASL adds mechanisms).
		for i := range 60 {
			opts := []kgo.Opt{kgo.SeedBrokers(b.Addr), kgo.SASL(scram512(adminUser, "wrong"))}
			if i%2 == 0 {
				opts = append(opts, overTLS...)
			}
			cl, err := kgo.NewClient(opts...)
			if err != nil {
				t.Fatal(err)
			}
			err = pingErr(cl)
			cl.Close()
			if err == nil {
				t.Fatalf("login %d with a wrong password succeeded", i)
			}
		}
		check(t)
	})
	t.Run("TLS cut short", func(t *testing.T) {
		for i := range 200 {
			c, err := net.DialTimeout("tcp", b.TLSAddr, 5*time.Second)
			if err != nil {
				t.Fatalf("dial %d: %v", i, err)
			}
			switch i % 4 {
			case 0: // no byte
			case 1: // part of a ClientHello
				_, _ = c.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01})
			case 2: // a whole handshake, then gone without a request
				tc := tls.Client(c, b.pki.clientTLS())
				_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
				if err := tc.Handshake(); err != nil {
					t.Fatalf("handshake %d: %v", i, err)
				}
			case 3: // a handshake and half a request, with a reset
				tc := tls.Client(c, b.pki.clientTLS())
				_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
				if err := tc.Handshake(); err != nil {
					t.Fatalf("handshake %d: %v", i, err)
				}
				f := metadataFrame(int32(i))
				_, _ = tc.Write(f[:len(f)/2])
				_ = c.(*net.TCPConn).SetLinger(0)
			}
			c.Close()
		}
		check(t)
	})
}
