package main

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof" // profiles on --debug-addr
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicebroker/sluice/broker"
	"github.com/sluicebroker/sluice/cluster"
	"github.com/sluicebroker/sluice/internal/gcpace"
	"github.com/sluicebroker/sluice/quorum"
	"github.com/sluicebroker/sluice/replica"
	"github.com/sluicebroker/sluice/segment"
)

// serveConfig is everything `sluice serve` is told, by flags or a config file.
type serveConfig struct {
	listen           string
	advertised       string
	dataDir          string
	nodeID           uint64
	raftAddr         string
	voters           string
	rack             string
	partitions       int
	replication      int
	autoCreate       bool
	segmentBytes     int64
	segmentAge       time.Duration
	retention        time.Duration
	retentionBytes   int64
	retentionCheck   time.Duration
	maxMessageBytes  int
	netioBackend     string
	raftLog          string
	logLevel         string
	configFile       string
	debugAddr        string
	stallTraceDir    string
	stallThreshold   time.Duration
	metricsAddr      string
	fetchSessions    int
	offsetsRetention time.Duration
	txnMaxTimeout    time.Duration
	leaderRebalance  time.Duration
	bootstrap        string
	replicaLagMax    time.Duration
	cleanerThreads   int
	cleanerIOBytes   int64
	cleanerBackoff   time.Duration
	raftQuiesce      bool
	raftTransport    string
	raftStepWorkers  uint64
	raftTick         time.Duration
	snapEntries      uint64
	snapInterval     time.Duration
	minFreeBytes     int64
	gcHeadroom       int64

	sec             securityFlags // security.go
	groupMinSession time.Duration
	quotaWindowNum  int
	quotaWindowSize time.Duration
	groupMaxSession time.Duration
	groupInitDelay  time.Duration
}

func serveFlags(cfg *serveConfig) *flag.FlagSet {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.StringVar(&cfg.configFile, "config", "", "config file: one `flag = value` per line (flag names as below, # comments); command-line flags win")
	fs.StringVar(&cfg.listen, "listen", ":9092", "Kafka listener address")
	fs.StringVar(&cfg.advertised, "advertised-addr", "", "host:port clients are told to connect to (default: the listen address, localhost when it names no host)")
	fs.StringVar(&cfg.dataDir, "data-dir", "./data", "data directory: Raft log and partition segments")
	fs.Uint64Var(&cfg.nodeID, "node-id", 1, "this broker's node id (>= 1)")
	fs.StringVar(&cfg.raftAddr, "raft-addr", "127.0.0.1:9093", "address for Raft traffic between brokers")
	fs.StringVar(&cfg.voters, "controller-voters", "", "controller quorum voters, id@host:port,... (default: this node alone)")
	fs.StringVar(&cfg.bootstrap, "bootstrap-servers", "", "Kafka addresses of running brokers, host:port,...: a broker that is not a controller voter joins the cluster through them")
	fs.StringVar(&cfg.rack, "rack", "", "rack id reported in metadata")
	fs.IntVar(&cfg.partitions, "partitions", 1, "default partition count for new topics (num.partitions)")
	fs.IntVar(&cfg.replication, "replication-factor", 1, "default replication factor for new topics")
	fs.BoolVar(&cfg.autoCreate, "auto-create-topics", true, "create unknown topics on metadata requests that allow it")
	fs.Int64Var(&cfg.segmentBytes, "segment-bytes", 1<<30, "segment file size (log.segment.bytes); the active file is preallocated as it fills: 128 KiB, doubling up to 64 MiB at a time")
	fs.DurationVar(&cfg.segmentAge, "segment-age", 7*24*time.Hour, "roll the active segment after this long (log.roll.ms); 0 = never")
	fs.DurationVar(&cfg.retention, "retention", 7*24*time.Hour, "delete segments older than this (log.retention.ms); 0 = forever")
	fs.Int64Var(&cfg.retentionBytes, "retention-bytes", -1, "delete oldest segments while a partition holds more (log.retention.bytes); -1 = unlimited")
	fs.DurationVar(&cfg.retentionCheck, "retention-check-interval", 5*time.Minute, "how often retention runs")
	fs.DurationVar(&cfg.offsetsRetention, "offsets-retention", 7*24*time.Hour, "committed offsets of a consumer group empty this long expire (offsets.retention.minutes)")
	fs.IntVar(&cfg.quotaWindowNum, "quota-window-num", broker.DefaultQuotaWindowSamples, "samples in the window client byte-rate quotas are measured over (quota.window.num)")
	fs.DurationVar(&cfg.quotaWindowSize, "quota-window-size", broker.DefaultQuotaWindowSize, "length of each quota sample (quota.window.size.seconds)")
	fs.DurationVar(&cfg.groupMinSession, "group-min-session-timeout", 6*time.Second, "smallest consumer session timeout a group member may ask for; below it JoinGroup gets INVALID_SESSION_TIMEOUT (group.min.session.timeout.ms)")
	fs.DurationVar(&cfg.groupMaxSession, "group-max-session-timeout", 30*time.Minute, "largest consumer session timeout a group member may ask for (group.max.session.timeout.ms)")
	fs.DurationVar(&cfg.groupInitDelay, "group-initial-rebalance-delay", 3*time.Second, "the first rebalance of an empty consumer group waits this long for more members (group.initial.rebalance.delay.ms); 0 = none")
	fs.DurationVar(&cfg.txnMaxTimeout, "transaction-max-timeout", 15*time.Minute, "largest transaction timeout a producer may ask for (transaction.max.timeout.ms)")
	fs.DurationVar(&cfg.leaderRebalance, "leader-rebalance-interval", 30*time.Second, "how often partitions are handed back to their preferred (first) replica once it is in sync")
	fs.DurationVar(&cfg.replicaLagMax, "replica-lag-max", 10*time.Second, "a follower that cannot catch up with its leader within this long leaves the ISR (replica.lag.time.max.ms)")
	fs.IntVar(&cfg.cleanerThreads, "log-cleaner-threads", 1, "log cleaner threads compacting cleanup.policy=compact topics (log.cleaner.threads); 0 = no compaction; more than 1 runs as 1")
	fs.Int64Var(&cfg.cleanerIOBytes, "log-cleaner-io-max-bytes-per-second", 0, "bound on the log cleaner's reads plus writes (log.cleaner.io.max.bytes.per.second); 0 = unbounded")
	fs.DurationVar(&cfg.cleanerBackoff, "log-cleaner-backoff", 15*time.Second, "pause of the log cleaner when no log is due for cleaning (log.cleaner.backoff.ms)")
	fs.Int64Var(&cfg.minFreeBytes, "storage-min-free-bytes", -1, "refuse produce (KAFKA_STORAGE_ERROR) and new partitions while the data directory's disk has less free; -1 = 1 GiB or 5% of the disk, whichever is less; 0 = never refuse")
	fs.DurationVar(&cfg.raftTick, "raft-tick", 100*time.Millisecond, "Raft tick (dragonboat RTT): every partition's Raft group is stepped this often, idle or not (the idle cost of a partition); "+
		"heartbeats every ~10 ms but at least every tick, elections after ~150 ms but at least 10 ticks (randomised up to twice that): "+
		"at 100 ms a heartbeat every tick and a new leader 1-2 s after its predecessor died; writes do not wait for ticks")
	fs.Uint64Var(&cfg.raftStepWorkers, "raft-step-workers", 0, "goroutines stepping the Raft groups (dragonboat ExecShards; 0: its default, 16); "+
		"fixed when the data directory is created")
	fs.Uint64Var(&cfg.snapEntries, "raft-snapshot-entries", 1000, "a partition's Raft snapshot (its checkpoint; the Raft log is compacted behind it) is due after this many entries "+
		"and --raft-snapshot-interval both (spread per partition over 1-1.5x), and taken at 50x this many whatever the time")
	fs.DurationVar(&cfg.snapInterval, "raft-snapshot-interval", 10*time.Second, "least time between a busy partition's Raft snapshots: each holds the partition's apply, "+
		"and so its acknowledgements, for a few fsyncs; negative = by --raft-snapshot-entries alone")
	fs.StringVar(&cfg.raftTransport, "raft-transport", quorum.TransportSluice, "Raft transport between brokers: sluice (package quorum/raftnet: followers keep received entries in the "+
		"frames they arrived in, leaders write commands from their log with one writev per batch) or dragonboat (its TCP transport, for comparison); "+
		"the two do not interoperate: every broker of a cluster must use the same")
	fs.BoolVar(&cfg.raftQuiesce, "raft-quiesce", false, "let Raft groups idle for 10 election timeouts stop heartbeating (dragonboat quiesce; followers' 1 s lag checks keep replicated partitions awake)")
	fs.IntVar(&cfg.maxMessageBytes, "max-message-bytes", broker.DefaultMaxMessageBytes, "largest record batch accepted (message.max.bytes)")
	fs.StringVar(&cfg.raftLog, "raft-log", "segment", "Raft log store: segment, the only one (the partitions' segment files are their Raft log; "+
		"tan and pebble were removed on 2026-12-07)")
	fs.StringVar(&cfg.netioBackend, "netio", "auto", "network backend: auto (io_uring where it can run, else gnet; see results/2026-11-23-2core-vm-bakeoff), uring, gnet or std")
	fs.StringVar(&cfg.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.IntVar(&cfg.fetchSessions, "fetch-session-cache-slots", broker.DefaultFetchSessionSlots, "incremental fetch sessions (KIP-227) kept at once (max.incremental.fetch.session.cache.slots); 0 = no sessions")
	fs.StringVar(&cfg.metricsAddr, "metrics-addr", "", "serve Prometheus metrics at /metrics, and /healthz and /readyz, on this address (e.g. :9644); off when empty")
	fs.StringVar(&cfg.debugAddr, "debug-addr", "", "serve Go's pprof profiles on this address (e.g. 127.0.0.1:6060); off when empty")
	fs.StringVar(&cfg.stallTraceDir, "debug-stall-trace", "", "diagnostics: keep a Go execution trace of the last seconds (flight recorder) and write it into this directory "+
		"when a Produce takes --debug-stall-threshold or longer (at most one file per 5 s, 30 in all); off when empty")
	fs.DurationVar(&cfg.stallThreshold, "debug-stall-threshold", 20*time.Millisecond, "a Produce this slow writes a --debug-stall-trace file")
	fs.Int64Var(&cfg.gcHeadroom, "gc-headroom", gcpace.DefaultHeadroom, "bytes the Go heap may grow between garbage collections at least (GOGC raised while the live heap is smaller; "+
		"a small heap collected several times a second otherwise); 0 = Go's own pacing; the GOGC environment variable, when set, overrides it")
	addSecurityFlags(fs, &cfg.sec)
	return fs
}

// parseServeArgs reads flags, then the config file for every flag not given on the command line.
func parseServeArgs(args []string) (serveConfig, error) {
	var cfg serveConfig
	fs := serveFlags(&cfg)
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if cfg.configFile != "" {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if err := applyConfigFile(fs, cfg.configFile, set); err != nil {
			return cfg, err
		}
	}
	if err := quorum.CheckTransport(cfg.raftTransport); err != nil {
		return cfg, fmt.Errorf("--raft-transport: %w", err)
	}
	if cfg.raftLog != "segment" {
		return cfg, fmt.Errorf("--raft-log %q: the Raft log is the partitions' segments (segment); tan and pebble were removed on 2026-12-07", cfg.raftLog)
	}
	return cfg, nil
}

func applyConfigFile(fs *flag.FlagSet, path string, skip map[string]bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		name, value, ok := strings.Cut(text, "=")
		if !ok {
			return fmt.Errorf("%s:%d: want `name = value`, got %q", path, line, text)
		}
		name, value = strings.TrimSpace(name), strings.Trim(strings.TrimSpace(value), `"`)
		if name == "config" {
			return fmt.Errorf("%s:%d: a config file cannot name another", path, line)
		}
		if fs.Lookup(name) == nil {
			return fmt.Errorf("%s:%d: unknown setting %q", path, line, name)
		}
		if skip[name] {
			continue
		}
		if err := fs.Set(name, value); err != nil {
			return fmt.Errorf("%s:%d: %s: %v", path, line, name, err)
		}
	}
	return sc.Err()
}

// advertisedHostPort is where clients should connect: the flag, else the listen address with
// "localhost" standing in for an unspecified host.
func advertisedHostPort(cfg serveConfig) (string, int32, error) {
	addr := cfg.advertised
	if addr == "" {
		addr = cfg.listen
	}
	if addr == "" {
		addr = cfg.sec.tlsListen // TLS only (security.go)
	}
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("advertised address %q: %v", addr, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return "", 0, fmt.Errorf("advertised address %q: needs a port", addr)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "localhost"
	}
	return host, int32(port), nil
}

func serve(args []string) error {
	cfg, err := parseServeArgs(args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.logLevel)); err != nil {
		return fmt.Errorf("log level: %v", err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(logger)

	host, port, voters, err := checkServeConfig(&cfg)
	if err != nil {
		return err
	}
	if cfg.gcHeadroom < 0 {
		return fmt.Errorf("--gc-headroom %d: must be 0 (Go's own pacing) or more", cfg.gcHeadroom)
	}
	gcCtx, stopGC := context.WithCancel(context.Background())
	defer stopGC()
	go gcpace.Run(gcCtx, uint64(cfg.gcHeadroom))
	logOpts := segment.Options{
		SegmentBytes:   cfg.segmentBytes,
		SegmentAge:     cfg.segmentAge,
		RetentionBytes: cfg.retentionBytes,
		RetentionAge:   cfg.retention,
	}
	security, err := cfg.sec.resolve(logger, cfg.listen)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.dataDir, 0o755); err != nil {
		return err
	}
	var ready atomic.Bool // /readyz: the Kafka listener serves
	if cfg.metricsAddr != "" {
		stopMetrics, err := serveMetrics(cfg.metricsAddr, &ready, logger)
		if err != nil {
			return err
		}
		defer stopMetrics()
	}
	if cfg.debugAddr != "" {
		go func() {
			// net/http/pprof registers its handlers on the default mux.
			if err := http.ListenAndServe(cfg.debugAddr, nil); err != nil {
				logger.Error("debug listener", "addr", cfg.debugAddr, "err", err)
			}
		}()
	}

	if cfg.stallTraceDir != "" {
		stop, err := startStallTrace(cfg.stallTraceDir, cfg.stallThreshold, logger)
		if err != nil {
			return fmt.Errorf("--debug-stall-trace: %w", err)
		}
		defer stop()
	}

	qh, err := startRaft(cfg, security, logger)
	if err != nil {
		return err
	}
	defer qh.Close()
	ctl, err := startController(cfg, qh, voters, security, quorum.BrokerInfo{
		NodeID: int32(cfg.nodeID), Host: host, Port: port, Rack: cfg.rack, RaftAddr: cfg.raftAddr, TLSPort: security.tlsPort, SASLPort: security.saslPort,
	}, logger)
	if err != nil {
		return err
	}

	mgr := replica.NewManager(qh, replica.Config{
		DataDir:                filepath.Join(cfg.dataDir, "logs"),
		Log:                    logOpts,
		MaxMessageBytes:        int32(cfg.maxMessageBytes),
		RetentionCheckInterval: cfg.retentionCheck,
		ReplicaLagMax:          cfg.replicaLagMax,
		Logger:                 logger,

		CleanerThreads:          cfg.cleanerThreads,
		CleanerIOBytesPerSecond: cfg.cleanerIOBytes,
		CleanerBackoff:          cfg.cleanerBackoff,
	})
	defer mgr.Close()
	// A new partition replica takes its first segment chunk and a small Raft metadata file.
	perPartition := int64(1 << 20)
	disk, err := broker.NewDiskGuard(cfg.dataDir, cfg.minFreeBytes, perPartition, logger)
	if err != nil {
		return err
	}
	diskCtx, stopDisk := context.WithCancel(context.Background())
	defer stopDisk()
	go disk.Run(diskCtx)

	agent := cluster.Start(cluster.Config{
		NodeID:                  int32(cfg.nodeID),
		LeaderRebalanceInterval: cfg.leaderRebalance,
		DiskLow:                 disk.Low,
		Logger:                  logger,
	}, ctl, mgr)

	br := broker.New(brokerConfig(cfg, host, port, disk, security, logOpts, logger), ctl, mgr, agent)
	listeners, closeListeners, err := startListeners(cfg, security, br, logger) // security.go: plaintext and TLS
	if err != nil {
		br.Close()
		agent.Close()
		return err
	}
	registerServeMetrics(br, listeners, logger)
	ready.Store(true)
	logger.Info("sluice serving", "advertised", net.JoinHostPort(host, strconv.Itoa(int(port))),
		"data", cfg.dataDir, "node", cfg.nodeID, "storage_min_free_bytes", disk.MinFree())

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	s := <-sig
	logger.Info("shutting down", "signal", s.String())
	ready.Store(false)
	closeListeners()
	br.Close()
	agent.Close()
	return nil
}

// checkServeConfig checks what parsing cannot and fills the defaults that depend on other flags:
// the advertised address and the controller voters (this node alone when none are given).
func checkServeConfig(cfg *serveConfig) (host string, port int32, voters map[uint64]string, err error) {
	if cfg.nodeID == 0 || cfg.nodeID > 1<<31-1 {
		return "", 0, nil, fmt.Errorf("node id %d must be between 1 and 2147483647", cfg.nodeID)
	}
	host, port, err = advertisedHostPort(*cfg)
	if err != nil {
		return "", 0, nil, err
	}
	if cfg.quotaWindowNum < 2 || cfg.quotaWindowSize < time.Millisecond {
		return "", 0, nil, fmt.Errorf("--quota-window-num must be at least 2 and --quota-window-size at least 1ms")
	}
	if cfg.groupMinSession <= 0 || cfg.groupMaxSession < cfg.groupMinSession {
		return "", 0, nil, fmt.Errorf("group session timeouts: need 0 < --group-min-session-timeout (%v) <= --group-max-session-timeout (%v)", cfg.groupMinSession, cfg.groupMaxSession)
	}
	if cfg.voters == "" {
		cfg.voters = fmt.Sprintf("%d@%s", cfg.nodeID, cfg.raftAddr)
	}
	voters, err = quorum.ParseVoters(cfg.voters)
	if err != nil {
		return "", 0, nil, fmt.Errorf("controller voters: %v", err)
	}
	return host, port, voters, nil
}

// startRaft starts this node's Raft host (every partition's group and the controller's).
func startRaft(cfg serveConfig, security *securitySetup, logger *slog.Logger) (*quorum.Host, error) {
	qh, err := quorum.NewHost(quorum.HostConfig{
		NodeID:      cfg.nodeID,
		RaftAddr:    cfg.raftAddr,
		DataDir:     filepath.Join(cfg.dataDir, "raft"),
		Logger:      logger,
		Quiesce:     cfg.raftQuiesce,
		StepWorkers: cfg.raftStepWorkers,
		RTT:         cfg.raftTick,

		SnapshotEntries:  cfg.snapEntries,
		SnapshotInterval: cfg.snapInterval,
		TLS:              security.raft,
		Transport:        cfg.raftTransport,
	})
	if errors.Is(err, quorum.ErrOtherLogDB) {
		return nil, fmt.Errorf("starting raft: %v\n%s was written by a Sluice before 2026-12-07, whose Raft log (dragonboat's tan) this one "+
			"cannot read: consume what it holds with that version (the commit before 2026-12-07 takes --raft-log tan), "+
			"or move the directory away to start empty", err, cfg.dataDir)
	}
	if err != nil {
		return nil, fmt.Errorf("starting raft: %v", err)
	}
	return qh, nil
}

// startController starts this node's replica of the controller group (joining the cluster first when
// this node is not a voter), waits until it has caught up, and registers this broker as self and the
// bootstrap user.
func startController(cfg serveConfig, qh *quorum.Host, voters map[uint64]string, security *securitySetup, self quorum.BrokerInfo, logger *slog.Logger) (*quorum.Controller, error) {
	ctl, err := qh.StartController(voters, false)
	if err != nil {
		return nil, fmt.Errorf("starting the controller: %v", err)
	}
	if ctl.Observer() {
		// Not a voter: a running broker must add this one to the controller group first.
		if err := joinCluster(cfg, logger, security.kgoSecurity()...); err != nil {
			return nil, err
		}
	}
	// After a restart the controller replays its log; wait until this node has caught up, or the
	// replica manager would start from stale metadata.
	readyCtx, cancelReady := context.WithTimeout(context.Background(), 60*time.Second)
	err = ctl.WaitReady(readyCtx)
	cancelReady()
	if err != nil {
		return nil, fmt.Errorf("waiting for the controller: %v", err)
	}
	if err := registerBroker(ctl, self); err != nil {
		return nil, err
	}
	if err := ensureBootstrapUser(ctl, security, logger); err != nil {
		return nil, err
	}
	return ctl, nil
}

// brokerConfig is the Kafka API's configuration from the flags.
func brokerConfig(cfg serveConfig, host string, port int32, disk *broker.DiskGuard, security *securitySetup, logOpts segment.Options, logger *slog.Logger) broker.Config {
	return broker.Config{
		NodeID:                     int32(cfg.nodeID),
		Host:                       host,
		Port:                       port,
		Rack:                       cfg.rack,
		DefaultPartitions:          int32(cfg.partitions),
		DefaultReplicationFactor:   int16(cfg.replication),
		AutoCreateTopics:           cfg.autoCreate,
		MaxMessageBytes:            int32(cfg.maxMessageBytes),
		OffsetsRetention:           cfg.offsetsRetention,
		TransactionMaxTimeout:      cfg.txnMaxTimeout,
		GroupMinSessionTimeout:     cfg.groupMinSession,
		QuotaWindowSamples:         cfg.quotaWindowNum,
		QuotaWindowSize:            cfg.quotaWindowSize,
		GroupMaxSessionTimeout:     cfg.groupMaxSession,
		GroupInitialRebalanceDelay: cfg.groupInitDelay,
		Disk:                       disk,
		LogDir:                     filepath.Join(cfg.dataDir, "logs"),
		FetchSessionSlots:          cmp.Or(max(cfg.fetchSessions, 0), -1), // the flag's 0 is the broker's "none"
		Security:                   security.broker,
		Log:                        logOpts,
		Logger:                     logger,
	}
}

// joinCluster asks the running brokers (--bootstrap-servers) to add this broker to the controller
// group as an observer, retrying for a minute while they start or elect.
func joinCluster(cfg serveConfig, logger *slog.Logger, opts ...kgo.Opt) error {
	if cfg.bootstrap == "" {
		return fmt.Errorf("node %d is not among the controller voters: give --bootstrap-servers to join a running cluster", cfg.nodeID)
	}
	host, portStr, err := net.SplitHostPort(cfg.raftAddr)
	if err != nil {
		return fmt.Errorf("raft address %q: %v", cfg.raftAddr, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return fmt.Errorf("raft address %q: bad port", cfg.raftAddr)
	}
	cl, err := kgo.NewClient(append(opts, kgo.SeedBrokers(strings.Split(cfg.bootstrap, ",")...))...)
	if err != nil {
		return err
	}
	defer cl.Close()
	req := kmsg.NewPtrBrokerRegistrationRequest()
	req.BrokerID = int32(cfg.nodeID)
	l := kmsg.NewBrokerRegistrationRequestListener()
	l.Name, l.Host, l.Port = broker.RaftListener, host, uint16(port)
	req.Listeners = append(req.Listeners, l)
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		resp, err := req.RequestWith(ctx, cl)
		cancel()
		if err == nil {
			err = kerr.ErrorForCode(resp.ErrorCode)
		}
		if err == nil {
			logger.Info("joined the cluster as a controller observer", "via", cfg.bootstrap)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("joining the cluster through %s: %v", cfg.bootstrap, err)
		}
		logger.Warn("joining the cluster; retrying", "via", cfg.bootstrap, "err", err)
		time.Sleep(time.Second)
	}
}

// registerBroker records this broker in the controller, retrying while the controller elects a leader.
func registerBroker(ctl *quorum.Controller, bi quorum.BrokerInfo) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		attempt, cancelAttempt := context.WithTimeout(ctx, 5*time.Second)
		err := ctl.RegisterBroker(attempt, bi)
		cancelAttempt()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("registering with the controller: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
