// Command partitions measures one Sluice broker holding many partitions (issue 14): it starts
// `sluice serve` on loopback with a fresh data directory, creates N rf=1 partitions (topics of
// -per-topic partitions), and reports
//
//   - creation: CreateTopics for all topics, then until every partition accepted an acks=all record;
//   - idle: broker CPU (utime+stime from /proc) over -idle with no traffic, RSS, real disk (allocated
//     blocks under the data directory, what du counts);
//   - produce: -rate records/s of 100 B, acks=all, spread round robin over all partitions for
//     -produce, open loop (latency from each record's intended send time), p50/p99/p99.9/max;
//   - restart: graceful stop (SIGTERM), start, until every partition accepted an acks=all record.
//
// One line of JSON per run on stdout (plus a readable summary on stderr). bench/partitions.sh runs it
// for several binaries and flag sets in one go.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicebroker/sluice/internal/testcluster"
)

type result struct {
	Label             string  `json:"label"`
	Flags             string  `json:"flags"`
	Partitions        int     `json:"partitions"`
	CreateConcurrency int     `json:"create_concurrency"`
	CreateSec         float64 `json:"create_topics_s"`
	AllWritableSec    float64 `json:"create_all_writable_s"`
	EmptyCPUPct       float64 `json:"empty_broker_idle_cpu_pct_of_core"`
	IdleCPUPct        float64 `json:"idle_cpu_pct_of_core"`
	IdleSec           float64 `json:"idle_s"`
	RSSEmptyMiB       float64 `json:"rss_empty_mib"`
	RSSIdleMiB        float64 `json:"rss_idle_mib"`
	OpenFilesIdle     int     `json:"open_files_idle"`    // the broker's descriptors after the idle window
	OpenFilesRestart  int     `json:"open_files_restart"` // and once all partitions took a record after the restart
	DiskEmptyMiB      float64 `json:"disk_empty_mib"`
	DiskIdleMiB       float64 `json:"disk_idle_mib"`
	Rate              int     `json:"produce_rate"`
	Sent              int64   `json:"produce_sent"`
	Errors            int64   `json:"produce_errors"`
	P50Ms             float64 `json:"produce_p50_ms"`
	P99Ms             float64 `json:"produce_p99_ms"`
	P999Ms            float64 `json:"produce_p999_ms"`
	MaxMs             float64 `json:"produce_max_ms"`
	ProduceCPUPct     float64 `json:"produce_cpu_pct_of_core"`
	RestartWritable   float64 `json:"restart_all_writable_s"`
	RSSRestartMiB     float64 `json:"rss_after_restart_mib"`
}

func main() {
	bin := flag.String("sluice", "bin/sluice", "sluice binary")
	n := flag.Int("partitions", 1000, "partitions to create (rf=1)")
	perTopic := flag.Int("per-topic", 50, "partitions per topic")
	idle := flag.Duration("idle", 60*time.Second, "idle measurement window")
	settle := flag.Duration("settle", 10*time.Second, "wait after creation before the idle window")
	rate := flag.Int("rate", 1000, "records/s during the produce phase, spread over all partitions")
	produceFor := flag.Duration("produce", 30*time.Second, "produce phase length")
	extra := flag.String("flags", "", "extra serve flags, space separated")
	dir := flag.String("dir", "", "work directory (data dir goes under it; removed at the end)")
	port := flag.Int("port", 23092, "Kafka port (Raft on port+1)")
	label := flag.String("label", "", "label for the result")
	keep := flag.Bool("keep", false, "keep the data directory")
	emptyIdle := flag.Duration("empty-idle", 20*time.Second, "idle window for the broker before any topic (its baseline CPU)")
	profile := flag.String("profile", "", "write a CPU profile of the broker over the idle window to this file (serves pprof on port+2), and one of its restart to this file's name with -restart before the extension")
	restartProfile := flag.Duration("restart-profile", 20*time.Second, "with -profile: length of the restart's CPU profile, from the process's start")
	createConc := flag.Int("create-concurrency", 1, "CreateTopics requests in flight at once (one topic each)")
	flag.Parse()
	if *dir == "" {
		d, err := os.MkdirTemp("", "sluice-partitions-")
		check(err)
		*dir = d
	}
	data := filepath.Join(*dir, "data")
	check(os.RemoveAll(data))
	if !*keep {
		defer os.RemoveAll(data)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", *port)
	br := &brokerProc{bin: *bin, args: append([]string{"serve", "--listen", addr,
		"--raft-addr", fmt.Sprintf("127.0.0.1:%d", *port+1), "--data-dir", data, "--log-level", "warn",
		"--auto-create-topics=false"}, strings.Fields(*extra)...), log: filepath.Join(*dir, "broker.log")}
	debugAddr := fmt.Sprintf("127.0.0.1:%d", *port+2)
	if *profile != "" {
		br.args = append(br.args, "--debug-addr", debugAddr)
	}
	r := result{Label: *label, Flags: *extra, Partitions: *n, Rate: *rate, CreateConcurrency: max(1, *createConc)}
	br.start()
	defer br.kill()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(0), kgo.DisableIdempotentWrite(),
		kgo.RecordDeliveryTimeout(5*time.Minute), kgo.MaxBufferedRecords(1<<20))
	check(err)
	waitUp(cl)
	time.Sleep(2 * time.Second)
	r.RSSEmptyMiB = rssMiB(br.pid())
	r.DiskEmptyMiB = diskMiB(data)
	if *emptyIdle > 0 {
		c0, t0 := cpuTicks(br.pid()), time.Now()
		time.Sleep(*emptyIdle)
		r.EmptyCPUPct = 100 * float64(cpuTicks(br.pid())-c0) / clkTck / time.Since(t0).Seconds()
	}

	// Creation.
	adm := kadm.NewClient(cl)
	topics := map[string]int32{}
	for i := 0; len(topics)*(*perTopic) < *n; i++ {
		parts := min(*perTopic, *n-i*(*perTopic))
		topics[fmt.Sprintf("p%04d", i)] = int32(parts)
	}
	start := time.Now()
	sem := make(chan struct{}, max(1, *createConc))
	var cwg sync.WaitGroup
	var created atomic.Int64
	for name, parts := range topics {
		sem <- struct{}{}
		cwg.Add(1)
		go func() {
			defer func() { <-sem; cwg.Done() }()
			// A request that timed out on a loaded broker (the client drops the connection) is sent
			// again: the retry may find the topic its first attempt created.
			for attempt := 1; ; attempt++ {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
				resp, err := adm.CreateTopic(ctx, parts, 1, nil, name)
				cancel()
				if err == nil {
					err = resp.Err
				}
				if err == nil || errors.Is(err, kerr.TopicAlreadyExists) {
					break
				}
				if attempt == 5 {
					check(err)
				}
				logf("create %s (attempt %d): %v", name, attempt, err)
				time.Sleep(time.Second)
			}
			if n := created.Add(int64(parts)); n%1000 < int64(parts) {
				logf("%d partitions created, %.0f s", n, time.Since(start).Seconds())
			}
		}()
	}
	cwg.Wait()
	r.CreateSec = time.Since(start).Seconds()
	writeAll(cl, topics)
	r.AllWritableSec = time.Since(start).Seconds()
	logf("%s: %d partitions: CreateTopics %.1f s, all writable %.1f s", *label, *n, r.CreateSec, r.AllWritableSec)

	// Idle.
	time.Sleep(*settle)
	profDone := make(chan struct{})
	if *profile != "" {
		go func() {
			defer close(profDone)
			fetchProfile(debugAddr, *idle, *profile)
		}()
	} else {
		close(profDone)
	}
	c0, t0 := cpuTicks(br.pid()), time.Now()
	time.Sleep(*idle)
	c1, t1 := cpuTicks(br.pid()), time.Now()
	<-profDone
	r.IdleSec = t1.Sub(t0).Seconds()
	r.IdleCPUPct = 100 * float64(c1-c0) / clkTck / r.IdleSec
	r.RSSIdleMiB = rssMiB(br.pid())
	r.OpenFilesIdle = openFiles(br.pid())
	r.DiskIdleMiB = diskMiB(data)
	logf("%s: idle %.0f s: CPU %.2f%% of a core (empty broker %.2f%%), RSS %.0f MiB (empty broker %.0f), disk %.0f MiB (empty %.0f)",
		*label, r.IdleSec, r.IdleCPUPct, r.EmptyCPUPct, r.RSSIdleMiB, r.RSSEmptyMiB, r.DiskIdleMiB, r.DiskEmptyMiB)
	logf("%s: %d open files", *label, r.OpenFilesIdle)

	// Produce at a low rate over all partitions.
	produce(cl, topics, *rate, *produceFor, br.pid(), &r)
	logf("%s: produce %d rec/s acks=all: %d sent, %d errors, p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, max %.2f ms, CPU %.1f%%",
		*label, *rate, r.Sent, r.Errors, r.P50Ms, r.P99Ms, r.P999Ms, r.MaxMs, r.ProduceCPUPct)
	cl.Close()

	// Restart.
	br.stop()
	start = time.Now()
	restartProfDone := make(chan struct{})
	if *profile != "" {
		go func() {
			defer close(restartProfDone)
			ext := filepath.Ext(*profile)
			path := strings.TrimSuffix(*profile, ext) + "-restart" + ext
			for i := 0; i < 100; i++ { // the debug listener opens early in start-up
				if c, err := net.DialTimeout("tcp", debugAddr, 100*time.Millisecond); err == nil {
					c.Close()
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			fetchProfile(debugAddr, *restartProfile, path)
		}()
	} else {
		close(restartProfDone)
	}
	br.start()
	cl2, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(0), kgo.DisableIdempotentWrite(),
		kgo.RecordDeliveryTimeout(5*time.Minute), kgo.MaxBufferedRecords(1<<20),
		kgo.RetryBackoffFn(func(int) time.Duration { return 50 * time.Millisecond }))
	check(err)
	writeAll(cl2, topics)
	r.RestartWritable = time.Since(start).Seconds()
	r.RSSRestartMiB = rssMiB(br.pid())
	r.OpenFilesRestart = openFiles(br.pid())
	cl2.Close()
	logf("%s: restart: all %d partitions writable after %.1f s, RSS %.0f MiB, %d open files", *label, *n, r.RestartWritable, r.RSSRestartMiB, r.OpenFilesRestart)
	<-restartProfDone
	br.stop()
	out, _ := json.Marshal(r)
	fmt.Println(string(out))
}

// fetchProfile saves the broker's CPU profile over d (the pprof endpoint of --debug-addr).
func fetchProfile(addr string, d time.Duration, path string) {
	if err := testcluster.SaveCPUProfile(addr, d, path); err != nil {
		logf("profile: %v", err)
	}
}

const clkTck = 100 // USER_HZ on Linux

type brokerProc struct {
	bin  string
	args []string
	log  string
	cmd  *exec.Cmd
	done chan struct{}
}

func (b *brokerProc) start() {
	f, err := os.OpenFile(b.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	check(err)
	b.cmd = exec.Command(b.bin, b.args...)
	b.cmd.Stdout, b.cmd.Stderr = f, f
	check(b.cmd.Start())
	running = b
	b.done = make(chan struct{})
	go func() { b.cmd.Wait(); f.Close(); close(b.done) }()
	addr := b.args[2]
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-b.done:
			fatalf("broker exited; see %s", b.log)
		case <-time.After(100 * time.Millisecond):
		}
		if i > 3000 {
			fatalf("broker did not listen within 5 min")
		}
	}
}

func (b *brokerProc) pid() int { return b.cmd.Process.Pid }

func (b *brokerProc) stop() {
	b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.done:
	case <-time.After(2 * time.Minute):
		b.kill()
	}
}

func (b *brokerProc) kill() {
	if b.cmd != nil && b.cmd.ProcessState == nil {
		b.cmd.Process.Kill()
		<-b.done
	}
}

func waitUp(cl *kgo.Client) {
	adm := kadm.NewClient(cl)
	for i := 0; i < 600; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := adm.ListBrokers(ctx)
		cancel()
		if err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	fatalf("broker not answering")
}

// writeAll produces one acks=all record to every partition (kgo retries NOT_LEADER and the like)
// and returns once all are acknowledged.
func writeAll(cl *kgo.Client, topics map[string]int32) {
	var wg sync.WaitGroup
	var failed atomic.Value
	for name, parts := range topics {
		for p := range parts {
			wg.Add(1)
			cl.Produce(context.Background(), &kgo.Record{Topic: name, Partition: p, Value: make([]byte, 100)},
				func(_ *kgo.Record, err error) {
					if err != nil {
						failed.Store(err)
					}
					wg.Done()
				})
		}
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		fatalf("writing every partition: %v", err)
	}
}

func produce(cl *kgo.Client, topics map[string]int32, rate int, d time.Duration, pid int, r *result) {
	type tp struct {
		t string
		p int32
	}
	var all []tp
	for name, parts := range topics {
		for p := range parts {
			all = append(all, tp{name, p})
		}
	}
	var mu sync.Mutex
	h := hdrhistogram.New(1, 60_000_000, 3) // microseconds
	var wg sync.WaitGroup
	var sent, errs atomic.Int64
	interval := time.Second / time.Duration(rate)
	c0 := cpuTicks(pid)
	begin := time.Now()
	for i := 0; ; i++ {
		intended := begin.Add(time.Duration(i) * interval)
		if intended.Sub(begin) >= d {
			break
		}
		if w := time.Until(intended); w > 0 {
			time.Sleep(w)
		}
		x := all[i%len(all)]
		wg.Add(1)
		sent.Add(1)
		cl.Produce(context.Background(), &kgo.Record{Topic: x.t, Partition: x.p, Value: make([]byte, 100)},
			func(_ *kgo.Record, err error) {
				lat := time.Since(intended)
				if err != nil {
					errs.Add(1)
				} else {
					mu.Lock()
					h.RecordValue(lat.Microseconds())
					mu.Unlock()
				}
				wg.Done()
			})
	}
	wg.Wait()
	r.ProduceCPUPct = 100 * float64(cpuTicks(pid)-c0) / clkTck / time.Since(begin).Seconds()
	r.Sent, r.Errors = sent.Load(), errs.Load()
	ms := func(q float64) float64 { return float64(h.ValueAtQuantile(q)) / 1000 }
	r.P50Ms, r.P99Ms, r.P999Ms, r.MaxMs = ms(50), ms(99), ms(99.9), float64(h.Max())/1000
}

func cpuTicks(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	check(err)
	// Fields after the command name (which may hold spaces) start after the last ')'.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64) // field 14 overall
	st, _ := strconv.ParseInt(f[12], 10, 64) // field 15
	return ut + st
}

// openFiles counts the process's descriptors (-1 when /proc cannot tell).
func openFiles(pid int) int {
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return len(fds)
}

func rssMiB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	check(err)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

// diskMiB is what du counts: allocated blocks of every file under dir.
func diskMiB(dir string) float64 {
	var total int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				total += st.Blocks * 512
			}
		}
		return nil
	})
	return float64(total) / (1 << 20)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
}

func check(err error) {
	if err != nil {
		fatalf("%v", err)
	}
}

// running is the broker process, killed by fatalf so that no broker outlives a failed run.
var running *brokerProc

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "partitions: "+format+"\n", args...)
	if running != nil && running.cmd.ProcessState == nil {
		running.cmd.Process.Kill()
	}
	os.Exit(1)
}
