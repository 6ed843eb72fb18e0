// Command chaos runs a multi-broker sluice cluster on loopback and hurts it on purpose.
//
// Mode "chaos" (the default) produces with idempotent acks=all producers while a fault loop
// kills (SIGKILL), pauses (SIGSTOP/SIGCONT) and gracefully restarts random brokers, one at a
// time, then heals the cluster, reads every partition back and checks that every acknowledged
// record is there once, at its acknowledged offset, in order. It prints acknowledged, lost,
// duplicated and reordered counts and the longest produce unavailability per partition, writes
// a JSON summary, and exits 1 when anything was lost, duplicated or reordered.
//
// Mode "failover" kills the leader of a partition -kills times and measures the time from the
// kill to the first acks=all produce acknowledged by the new leader.
//
// Mode "stale" pauses a partition's leader until another is elected, resumes it and records
// what the resumed broker answers to Metadata and Fetch (see stale.go).
//
// Mode "serve" only starts the cluster (for loadgen runs, see bench/cluster.sh) until SIGINT.
//
//	go build -o /tmp/chaos-bin/sluice ./cmd/sluice
//	go run ./bench/chaos -sluice /tmp/chaos-bin/sluice -duration 3m
//	go run ./bench/chaos -sluice /tmp/chaos-bin/sluice -mode failover -kills 24
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

type config struct {
	mode        string
	bin         string
	duration    time.Duration
	brokers     int
	partitions  int
	rate        float64
	producers   int
	recordSize  int
	seed        uint64
	dataDir     string
	basePort    int
	faults      map[string]int
	gapMin      time.Duration
	gapMax      time.Duration
	downMin     time.Duration
	downMax     time.Duration
	group       bool
	kills       int
	out         string
	keep        bool
	brokerFlags []string
	topic       string
	rf          int
}

func main() {
	log.SetFlags(log.Ltime | log.Lmicroseconds | log.LUTC)
	var cfg config
	var faults, brokerFlags string
	flag.StringVar(&cfg.mode, "mode", "chaos", "chaos | failover | stale | serve")
	flag.StringVar(&cfg.bin, "sluice", "", "sluice binary (default: go build ./cmd/sluice into the data dir)")
	flag.DurationVar(&cfg.duration, "duration", 3*time.Minute, "chaos: how long faults are injected under load")
	flag.IntVar(&cfg.brokers, "brokers", 3, "brokers in the cluster")
	flag.IntVar(&cfg.partitions, "partitions", 6, "partitions of the test topic")
	flag.IntVar(&cfg.rf, "replication-factor", 3, "replication factor of the test topic")
	flag.Float64Var(&cfg.rate, "rate", 2000, "chaos: records/s over all producers")
	flag.IntVar(&cfg.producers, "producers", 2, "chaos: producer clients")
	flag.IntVar(&cfg.recordSize, "record-size", 100, "chaos: value bytes (at least the id prefix)")
	flag.Uint64Var(&cfg.seed, "seed", 0, "random seed (0 = from the clock; printed)")
	flag.StringVar(&cfg.dataDir, "data-dir", "/tmp/chaos-run", "data directory (wiped at start); broker logs go here too")
	flag.IntVar(&cfg.basePort, "base-port", 33000, "broker i listens on base+100i+92 (Kafka) and base+100i+93 (Raft); 0: free ports")
	flag.StringVar(&faults, "faults", "kill=2,pause=2,restart=1", "chaos: fault mix, action=weight (kill, pause, restart)")
	flag.DurationVar(&cfg.gapMin, "gap-min", 2*time.Second, "chaos: least time between the end of one fault and the next")
	flag.DurationVar(&cfg.gapMax, "gap-max", 6*time.Second, "chaos: most time between faults")
	flag.DurationVar(&cfg.downMin, "down-min", 500*time.Millisecond, "chaos: shortest time a killed broker stays down or a paused one stays paused")
	flag.DurationVar(&cfg.downMax, "down-max", 8*time.Second, "chaos: longest down/paused time (the controller declares a broker dead after 3 s)")
	flag.BoolVar(&cfg.group, "group", true, "chaos: also consume with a consumer group and check it saw every acknowledged record")
	flag.IntVar(&cfg.kills, "kills", 24, "failover: leader kills; stale: pauses")
	flag.StringVar(&cfg.out, "out", "", "JSON summary file (default <data-dir>/summary.json)")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the data directory afterwards")
	flag.StringVar(&brokerFlags, "broker-flags", "--segment-bytes 8388608 --leader-rebalance-interval 3s", "extra `sluice serve` flags")
	flag.StringVar(&cfg.topic, "topic", "chaos", "test topic")
	flag.Parse()

	var err error
	if cfg.faults, err = parseFaults(faults); err != nil {
		log.Fatal(err)
	}
	cfg.brokerFlags = strings.Fields(brokerFlags)
	if cfg.seed == 0 {
		cfg.seed = uint64(time.Now().UnixNano())
	}
	if cfg.out == "" {
		cfg.out = filepath.Join(cfg.dataDir, "summary.json")
	}
	if !strings.HasPrefix(filepath.Clean(cfg.dataDir), "/tmp/") {
		log.Fatalf("-data-dir %s: must be under /tmp (it is wiped)", cfg.dataDir)
	}
	if err := os.RemoveAll(cfg.dataDir); err != nil {
		log.Fatal(err)
	}
	if err := os.MkdirAll(cfg.dataDir, 0o755); err != nil {
		log.Fatal(err)
	}
	if cfg.bin == "" {
		cfg.bin = filepath.Join(cfg.dataDir, "sluice")
		log.Printf("building %s", cfg.bin)
		cmd := exec.Command("go", "build", "-o", cfg.bin, "./cmd/sluice")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			log.Fatalf("go build ./cmd/sluice: %v", err)
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rng := rand.New(rand.NewPCG(cfg.seed, 0x5eed))
	c := newCluster(cfg.bin, cfg.dataDir, cfg.brokers, cfg.basePort, cfg.brokerFlags)
	log.Printf("mode %s, seed %d, %d brokers %v, data %s", cfg.mode, cfg.seed, cfg.brokers, c.addrs(), cfg.dataDir)

	var result any
	switch cfg.mode {
	case "chaos":
		result, err = runChaos(ctx, cfg, c, rng)
	case "failover":
		result, err = runFailover(ctx, cfg, c, rng)
	case "stale":
		result, err = runStale(ctx, cfg, c)
	case "serve":
		err = runServe(ctx, cfg, c)
	default:
		err = fmt.Errorf("unknown -mode %q", cfg.mode)
	}
	c.shutdown()
	if result != nil {
		if b, jerr := json.MarshalIndent(result, "", "  "); jerr == nil {
			if werr := os.WriteFile(cfg.out, append(b, '\n'), 0o644); werr != nil {
				log.Printf("write %s: %v", cfg.out, werr)
			} else {
				log.Printf("summary written to %s", cfg.out)
			}
		}
	}
	if !cfg.keep && err == nil {
		// Keep the broker logs and summary; drop the (large) data.
		for _, b := range c.brokers {
			os.RemoveAll(b.DataDir)
		}
	}
	if err != nil {
		log.Printf("FAIL: %v", err)
		os.Exit(1)
	}
}

func parseFaults(s string) (map[string]int, error) {
	out := map[string]int{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return nil, fmt.Errorf("-faults: %q is not action=weight", kv)
		}
		w, err := strconv.Atoi(v)
		if err != nil || w < 0 {
			return nil, fmt.Errorf("-faults: bad weight in %q", kv)
		}
		switch k {
		case "kill", "pause", "restart":
			out[k] = w
		default:
			return nil, fmt.Errorf("-faults: unknown action %q (kill, pause, restart)", k)
		}
	}
	return out, nil
}

// startAll starts every broker, creates the topic and waits for a healthy cluster. It returns the
// admin client of a run (adminClient), which the caller closes.
func startAll(ctx context.Context, cfg config, c *cluster) (*kadm.Client, *kgo.Client, error) {
	wctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	errs := make(chan error, len(c.brokers))
	for _, b := range c.brokers {
		go func() { errs <- c.launch(wctx, b) }()
	}
	for range c.brokers {
		if err := <-errs; err != nil {
			return nil, nil, err
		}
	}
	adm, cl, err := c.adminClient()
	if err != nil || cfg.topic == "" {
		return adm, cl, err
	}
	minISR := 0
	if cfg.rf >= 3 {
		minISR = 2
	}
	err = createTopic(wctx, adm, cfg.topic, cfg.partitions, cfg.rf, minISR)
	if err == nil {
		err = waitHealthy(wctx, adm, cfg.topic, cfg.brokers, cfg.partitions, true)
	}
	if err != nil {
		cl.Close()
		return nil, nil, err
	}
	return adm, cl, nil
}

func runServe(ctx context.Context, cfg config, c *cluster) error {
	cfg.topic = ""
	_, cl, err := startAll(ctx, cfg, c)
	if err != nil {
		return err
	}
	cl.Close()
	fmt.Printf("cluster up: %s\n", strings.Join(c.addrs(), ","))
	<-ctx.Done()
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func randDur(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(rng.Int64N(int64(hi-lo)))
}
