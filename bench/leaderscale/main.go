// Command leaderscale measures leadership at scale (issue 14): a cluster of brokers (default 3)
// on loopback with many rf=3 partitions, then kill -9 of one broker: how long until every
// partition it led has a new leader that acknowledged an acks=all record, and, once it is back,
// how long until preferred leaders are restored and how many partitions changed leader per
// second meanwhile (a storm shows as hundreds at once). Also the idle CPU of each broker.
//
//	go build -o /tmp/sluice ./cmd/sluice
//	go run ./bench/leaderscale -sluice /tmp/sluice -partitions 3000 > result.json
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicebroker/sluice/internal/testcluster"
)

type result struct {
	Brokers        int       `json:"brokers"`
	Partitions     int       `json:"partitions"`
	RF             int       `json:"rf"`
	Flags          string    `json:"flags"`
	CreateSec      float64   `json:"create_s"`   // CreateTopics calls
	BalancedSec    float64   `json:"balanced_s"` // creation start -> every partition led by its preferred replica, full ISR
	IdleCPUPct     []float64 `json:"idle_cpu_pct"`
	RSSMiB         []float64 `json:"rss_mib"`
	Victim         int32     `json:"victim"`
	VictimLed      int       `json:"victim_led"`
	FailoverP50Ms  float64   `json:"failover_p50_ms"` // kill -> acks=all record acknowledged by a new leader, per partition
	FailoverP99Ms  float64   `json:"failover_p99_ms"`
	FailoverMaxMs  float64   `json:"failover_max_ms"` // every partition the victim led writable again
	RestoredSec    float64   `json:"restored_s"`      // restart -> every partition led by its preferred replica again
	MaxMovesPerSec int       `json:"max_leader_changes_per_s"`
	MovesPerSec    []int     `json:"leader_changes_per_s"`
}

func main() {
	bin := flag.String("sluice", "bin/sluice", "sluice binary")
	nb := flag.Int("brokers", 3, "brokers")
	n := flag.Int("partitions", 3000, "partitions (topics of -per-topic)")
	perTopic := flag.Int("per-topic", 50, "partitions per topic")
	rf := flag.Int("rf", 3, "replication factor")
	extra := flag.String("flags", "", "extra serve flags, space separated")
	dir := flag.String("dir", "", "work directory (removed at the end)")
	idle := flag.Duration("idle", 30*time.Second, "idle CPU window")
	down := flag.Duration("down", 5*time.Second, "how long the killed broker stays down")
	restoreMax := flag.Duration("restore-max", 5*time.Minute, "give up waiting for preferred leaders after this")
	keep := flag.Bool("keep", false, "keep the work directory (data and broker logs)")
	profile := flag.String("profile", "", "write a CPU profile of broker 1 over the idle window to this file")
	flag.Parse()
	if *dir == "" {
		d, err := os.MkdirTemp("", "sluice-leaderscale-")
		check(err)
		*dir = d
	}
	if !*keep {
		defer os.RemoveAll(*dir)
	}
	r := result{Brokers: *nb, Partitions: *n, RF: *rf, Flags: *extra}

	nodes := make([]*testcluster.Node, *nb)
	for i := range nodes {
		addr, err := testcluster.FreeAddr()
		check(err)
		raft, err := testcluster.FreeAddr()
		check(err)
		nodes[i] = &testcluster.Node{ID: int32(i + 1), Addr: addr, RaftAddr: raft,
			DataDir: filepath.Join(*dir, fmt.Sprintf("data-%d", i+1)), LogPath: filepath.Join(*dir, fmt.Sprintf("broker-%d.log", i+1)),
			Command: testcluster.Binary(*bin), KillWithParent: true}
	}
	voters := testcluster.Voters(nodes)
	var seeds []string
	debugAddr := ""
	for i, nd := range nodes {
		nd.Args = append([]string{"--controller-voters", voters, "--log-level", "warn", "--auto-create-topics=false"}, strings.Fields(*extra)...)
		if i == 0 && *profile != "" {
			addr, err := testcluster.FreeAddr()
			check(err)
			debugAddr = addr
			nd.Args = append(nd.Args, "--debug-addr", addr)
		}
		check(nd.Start())
		seeds = append(seeds, nd.Addr)
	}
	defer func() {
		for _, nd := range nodes {
			nd.Stop(syscall.SIGTERM, time.Minute)
		}
	}()
	for _, nd := range nodes {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		check(testcluster.WaitListening(ctx, nd.Addr))
		cancel()
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...))
	check(err)
	adm := kadm.NewClient(cl)

	// Creation, until balanced.
	topics := map[string]int32{}
	for i := 0; len(topics)*(*perTopic) < *n; i++ {
		topics[fmt.Sprintf("l%04d", i)] = int32(min(*perTopic, *n-i*(*perTopic)))
	}
	names := make([]string, 0, len(topics))
	for name := range topics {
		names = append(names, name)
	}
	slices.Sort(names)
	start := time.Now()
	for _, name := range names {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		resp, err := adm.CreateTopic(ctx, topics[name], int16(*rf), nil, name)
		cancel()
		check(err)
		check(resp.Err)
	}
	r.CreateSec = time.Since(start).Seconds()
	logf("%d partitions rf=%d: CreateTopics %.1f s", *n, *rf, r.CreateSec)
	for {
		if leaders, ok := snapshot(adm, names); ok && balanced(leaders) {
			break
		}
		if time.Since(start) > 10*time.Minute {
			fatalf("not balanced after 10 min")
		}
		time.Sleep(time.Second)
	}
	r.BalancedSec = time.Since(start).Seconds()
	logf("balanced (preferred leaders, full ISR) %.1f s after creation started", r.BalancedSec)

	// Idle CPU per broker.
	time.Sleep(10 * time.Second)
	pids := make([]int, len(nodes))
	c0 := make([]int64, len(nodes))
	for i, nd := range nodes {
		pids[i] = pidOf(nd.DataDir)
		c0[i] = cpuTicks(pids[i])
	}
	t0 := time.Now()
	if debugAddr != "" {
		go fetchProfile(debugAddr, *idle, *profile)
	}
	time.Sleep(*idle)
	for i := range nodes {
		r.IdleCPUPct = append(r.IdleCPUPct, 100*float64(cpuTicks(pids[i])-c0[i])/100/time.Since(t0).Seconds())
		r.RSSMiB = append(r.RSSMiB, rssMiB(pids[i]))
	}
	logf("idle CPU %% of a core per broker %.1f, RSS MiB %.0f", r.IdleCPUPct, r.RSSMiB)

	// Kill -9 the broker leading the most partitions.
	leaders, _ := snapshot(adm, names)
	count := map[int32]int{}
	for _, l := range leaders {
		count[l.leader]++
	}
	for id, c := range count {
		if c > count[r.Victim] || r.Victim == 0 {
			r.Victim = id
		}
	}
	var led []topicPartition
	for tp, l := range leaders {
		if l.leader == r.Victim {
			led = append(led, tp)
		}
	}
	r.VictimLed = len(led)
	victim := nodes[r.Victim-1]
	var survivors []string
	for _, nd := range nodes {
		if nd != victim {
			survivors = append(survivors, nd.Addr)
		}
	}
	cl.Close()
	victim.Stop(syscall.SIGKILL, time.Minute)
	killed := time.Now()
	pcl, err := kgo.NewClient(kgo.SeedBrokers(survivors...), kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(0), kgo.DisableIdempotentWrite(),
		kgo.RecordDeliveryTimeout(5*time.Minute), kgo.MetadataMinAge(50*time.Millisecond),
		kgo.RetryBackoffFn(func(int) time.Duration { return 20 * time.Millisecond }))
	check(err)
	var mu sync.Mutex
	var took []float64
	var wg sync.WaitGroup
	for _, tp := range led {
		wg.Add(1)
		pcl.Produce(context.Background(), &kgo.Record{Topic: tp.Topic, Partition: tp.Partition, Value: make([]byte, 100)},
			func(_ *kgo.Record, err error) {
				defer wg.Done()
				if err != nil {
					fatalf("produce after the kill: %v", err)
				}
				mu.Lock()
				took = append(took, float64(time.Since(killed).Microseconds())/1000)
				mu.Unlock()
			})
	}
	wg.Wait()
	pcl.Close()
	slices.Sort(took)
	r.FailoverP50Ms, r.FailoverP99Ms, r.FailoverMaxMs = took[len(took)/2], took[len(took)*99/100], took[len(took)-1]
	logf("kill -9 of broker %d (leader of %d): acks=all accepted by new leaders p50 %.0f ms, p99 %.0f ms, all %.0f ms",
		r.Victim, r.VictimLed, r.FailoverP50Ms, r.FailoverP99Ms, r.FailoverMaxMs)

	// Back, and preferred leaders restored, counting leader changes per second.
	time.Sleep(max(0, *down-time.Since(killed)))
	check(victim.Start())
	restarted := time.Now()
	cl2, err := kgo.NewClient(kgo.SeedBrokers(survivors...))
	check(err)
	adm2 := kadm.NewClient(cl2)
	prev, _ := snapshot(adm2, names)
	for {
		time.Sleep(time.Second)
		cur, ok := snapshot(adm2, names)
		if !ok {
			continue
		}
		moved := 0
		for tp, l := range cur {
			if prev[tp].leader != l.leader {
				moved++
			}
		}
		r.MovesPerSec = append(r.MovesPerSec, moved)
		r.MaxMovesPerSec = max(r.MaxMovesPerSec, moved)
		prev = cur
		if balanced(cur) {
			break
		}
		if time.Since(restarted) > *restoreMax {
			logf("preferred leaders not restored within %v", *restoreMax)
			break
		}
	}
	r.RestoredSec = time.Since(restarted).Seconds()
	cl2.Close()
	logf("restart: preferred leaders restored after %.1f s, at most %d leader changes in a second", r.RestoredSec, r.MaxMovesPerSec)
	out, _ := json.Marshal(r)
	fmt.Println(string(out))
}

// fetchProfile saves the broker's CPU profile over d (the pprof endpoint of --debug-addr).
func fetchProfile(addr string, d time.Duration, path string) {
	if err := testcluster.SaveCPUProfile(addr, d, path); err != nil {
		logf("profile: %v", err)
	}
}

type topicPartition struct {
	Topic     string
	Partition int32
}

type leadership struct {
	leader    int32
	preferred int32
	fullISR   bool
}

// snapshot reads every partition's leader, preferred replica and whether its ISR is full.
func snapshot(adm *kadm.Client, names []string) (map[topicPartition]leadership, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	md, err := adm.Metadata(ctx, names...)
	if err != nil {
		return nil, false
	}
	out := map[topicPartition]leadership{}
	for name, td := range md.Topics {
		for _, p := range td.Partitions {
			l := leadership{leader: p.Leader, fullISR: len(p.ISR) == len(p.Replicas)}
			if len(p.Replicas) > 0 {
				l.preferred = p.Replicas[0]
			}
			out[topicPartition{Topic: name, Partition: p.Partition}] = l
		}
	}
	return out, true
}

func balanced(m map[topicPartition]leadership) bool {
	for _, l := range m {
		if l.leader != l.preferred || !l.fullISR {
			return false
		}
	}
	return len(m) > 0
}

// pidOf finds the broker process serving dataDir.
func pidOf(dataDir string) int {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && strings.Contains(string(b), "\x00"+dataDir+"\x00") {
			return pid
		}
	}
	fatalf("no process for %s", dataDir)
	return 0
}

func cpuTicks(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	check(err)
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s
}

func rssMiB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	check(err)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			kb, _ := strconv.ParseFloat(strings.Fields(line)[1], 64)
			return kb / 1024
		}
	}
	return 0
}

func logf(format string, args ...any) { log.Printf(format, args...) }

func check(err error) {
	if err != nil {
		fatalf("%v", err)
	}
}

func fatalf(format string, args ...any) {
	log.Printf(format, args...)
	os.Exit(1)
}
