// Package quorum runs Sluice's Raft groups on dragonboat: one NodeHost per broker, one Raft
// group (shard) per partition, and the controller group that holds cluster metadata.
// It knows nothing of record formats: commands are opaque bytes.
//
// A broker starts a Host (NewHost), the controller (StartController, then WaitReady), and one
// on-disk shard per partition it replicates (StartOnDiskShard); the partition leader writes with
// ProposeAsync. Node ids are broker ids; the Raft address of each broker is in BrokerInfo.
//
// Memory: dragonboat preallocates its per-shard queues; with its default lengths that was about
// 1.1 MiB of heap per replica, with the lengths queues.go sets about 0.1 MiB (BenchmarkIdleShards).
package quorum

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/client"
	"github.com/lni/dragonboat/v4/config"
	"github.com/lni/dragonboat/v4/raftio"
	sm "github.com/lni/dragonboat/v4/statemachine"

	"github.com/sluicebroker/sluice/quorum/raftnet"
	"github.com/sluicebroker/sluice/raftlog"
)

// Errors returned by Host methods; dragonboat's own errors are mapped onto these.
var (
	// ErrNotLeader: this node is not the shard's leader, or no leader is known yet
	// (Kafka NOT_LEADER_OR_FOLLOWER; the client refreshes metadata and retries).
	ErrNotLeader = errors.New("quorum: not the leader")
	// ErrShardNotFound: the shard is not running on this host.
	ErrShardNotFound = errors.New("quorum: shard not found")
	// ErrTimeout: the deadline passed before the command was applied (REQUEST_TIMED_OUT).
	// The command may still commit later.
	ErrTimeout = errors.New("quorum: timeout")
	// ErrLeadershipLost: this node stopped leading the shard while an asynchronous proposal was
	// pending. Like ErrTimeout the command may still commit under a later leader; unlike it, the
	// answer is immediate, and Kafka clients get NOT_LEADER_OR_FOLLOWER.
	ErrLeadershipLost = errors.New("quorum: leadership lost with the proposal pending")
	// ErrShardClosed: the shard or the whole host is shutting down.
	ErrShardClosed = errors.New("quorum: shard closed")
	// ErrBusy: back-pressure. The shard's in-memory Raft log is full (followers or the apply are
	// behind) or the LogDB is stalling its writes; retry later.
	ErrBusy = errors.New("quorum: shard busy")
	// ErrOtherLogDB: the data directory was written with another Raft log store (dragonboat's tan
	// or pebble, by a Sluice before 2026-12-07).
	ErrOtherLogDB = errors.New("quorum: the data directory holds another Raft log store")
	// ErrPayloadTooBig: the command is larger than the shard accepts (HostConfig.MaxInMemLogSize).
	ErrPayloadTooBig = errors.New("quorum: payload too big")
)

// HostConfig configures a Host. Zero values take the defaults noted.
type HostConfig struct {
	NodeID   uint64        // >= 1; the Raft replica id of this broker in every shard
	RaftAddr string        // host:port for Raft traffic (tests: 127.0.0.1:<free port>)
	DataDir  string        // NodeHost dir (LogDB, snapshots): e.g. <data>/raft
	RTT      time.Duration // dragonboat RTTMillisecond, the tick; default 5ms (loopback / LAN)
	Logger   *slog.Logger  // default slog.Default(); dragonboat's own logs go here at Warn and above

	// Per-shard Raft settings, in ticks of RTT. Defaults: a heartbeat every ~10 ms and an election
	// timeout of ~150 ms (randomised up to twice that) whatever the RTT, within dragonboat's rules
	// (heartbeat >= 1 tick, election >= 10 heartbeats): 2 and 30 at 5 ms, 1 and 10 at 20 ms. Fast
	// failover on loopback/LAN, yet not so tight that a GC pause or a busy 2-core machine deposes
	// leaders.
	HeartbeatTicks uint64
	ElectionTicks  uint64
	// SnapshotEntries: a local snapshot (metadata only for on-disk state machines: the state
	// machine's Sync, its checkpoint) is due after this many applied entries, and the Raft log is
	// compacted behind it, keeping CompactionOverhead entries for slightly lagging followers.
	// Defaults 1000 and 200. For partitions (StartOnDiskShard) the snapshot also waits until
	// SnapshotInterval has passed since the previous one (the state machine asks, SnapshotDue and
	// RequestSnapshot), up to SnapshotMaxEntries, when dragonboat takes it regardless.
	SnapshotEntries    uint64
	CompactionOverhead uint64
	// SnapshotInterval spaces a busy partition's snapshots in time: each one Syncs the partition's
	// log and checkpoint and writes dragonboat's snapshot files and directories (a dozen fsyncs),
	// holding that partition's apply meanwhile. Counted in entries alone, a partition taking 1,000
	// batches/s (linger 1 ms) snapshotted every second (results/2026-12-07-2core-vm-stall21).
	// Default 10 s; negative: none (snapshots every SnapshotEntries, as the controller's).
	SnapshotInterval time.Duration
	// SnapshotMaxEntries bounds a partition's live Raft entries (the Raft log store keeps about
	// 120 bytes of memory per entry) whatever the interval. Default 50 × SnapshotEntries.
	SnapshotMaxEntries uint64
	// MaxInMemLogSize bounds each shard's in-memory Raft log; proposals past it fail with ErrBusy.
	// Default 64 MiB.
	MaxInMemLogSize uint64
	// Quiesce lets a shard with no traffic for 10 election timeouts stop heartbeating and running
	// Raft's tick logic (dragonboat Config.Quiesce, experimental there). dragonboat still sends every
	// shard a tick message and steps it every RTT, quiesced or not, which is most of an idle shard's
	// CPU: measured, quiesce saves 5-10% of it, the RTT is what counts (results/2026-12-04-2core-vm-
	// partitions). Any message but a heartbeat wakes a quiesced shard: a
	// proposal's replication, a ReadIndex (the followers' lag checks every second keep rf>1
	// partitions awake), a config change. A quiesced follower does not notice a dead leader until
	// something wakes it.
	Quiesce bool
	// StepWorkers is dragonboat's Expert.Engine.ExecShards: the goroutines that step the shards
	// (each shard belongs to one, by id); 0 keeps dragonboat's 16. dragonboat records it in DataDir
	// and refuses to start with another value later.
	StepWorkers uint64
	// TLS, when its files are set, runs Raft traffic over mutual TLS (security.go).
	TLS RaftTLS
	// Transport moves Raft messages between brokers: TransportSluice (the default; package
	// raftnet, whose followers keep received entries in the frames they arrived in) or
	// TransportDragonboat (dragonboat's TCP transport, for comparison). The two do not speak to
	// each other: every broker of a cluster must use the same.
	Transport string
}

// Raft transports (HostConfig.Transport).
const (
	TransportSluice     = "sluice"
	TransportDragonboat = "dragonboat"
)

// CheckTransport fails unless name is one of the Raft transports.
func CheckTransport(name string) error {
	if name != TransportSluice && name != TransportDragonboat {
		return fmt.Errorf("unknown Raft transport %q: %s or %s", name, TransportSluice, TransportDragonboat)
	}
	return nil
}

func (c *HostConfig) setDefaults() {
	if c.RTT <= 0 {
		c.RTT = 5 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	// Heartbeat about every 10 ms and an election timeout of about 150 ms whatever the tick, with
	// the election at least 10 heartbeats (dragonboat warns otherwise): 2 and 30 at 5 ms, 1 and 10
	// (200-400 ms) at 20 ms.
	if c.HeartbeatTicks == 0 {
		c.HeartbeatTicks = max(1, uint64(10*time.Millisecond/c.RTT))
	}
	if c.ElectionTicks == 0 {
		c.ElectionTicks = max(10*c.HeartbeatTicks, uint64(150*time.Millisecond/c.RTT))
	}
	if c.SnapshotEntries == 0 {
		c.SnapshotEntries = 1000
	}
	if c.CompactionOverhead == 0 {
		c.CompactionOverhead = 200
	}
	if c.SnapshotInterval == 0 {
		c.SnapshotInterval = 10 * time.Second
	}
	if c.SnapshotMaxEntries == 0 {
		c.SnapshotMaxEntries = 50 * c.SnapshotEntries
	}
	if c.SnapshotInterval < 0 {
		c.SnapshotMaxEntries = c.SnapshotEntries
	}
	c.SnapshotMaxEntries = max(c.SnapshotMaxEntries, c.SnapshotEntries)
	if c.MaxInMemLogSize == 0 {
		c.MaxInMemLogSize = 64 << 20
	}
	if c.Transport == "" {
		c.Transport = TransportSluice
	}
}

// Host is this broker's dragonboat NodeHost plus the bookkeeping for asynchronous proposals.
type Host struct {
	cfg HostConfig
	nh  *dragonboat.NodeHost

	shards    sync.Map // shardID -> *shardState, for shards started through this Host
	closeOnce sync.Once

	leaderChanged chan struct{} // cap 1: a pending "some shard's leader changed"
	leaders       sync.Map      // shardID -> *leadership

	raftLog *raftlog.Store // the Raft log store
}

// RaftLog is the Raft log store (nil for a nil Host).
func (h *Host) RaftLog() *raftlog.Store {
	if h == nil {
		return nil
	}
	return h.raftLog
}

// shardState is the per-shard part of the asynchronous proposal path: a NO-OP session (created
// once, it allocates) and a FIFO of in-flight proposals drained by at most one goroutine.
type shardState struct {
	id      uint64
	self    uint64
	nh      *dragonboat.NodeHost
	session *client.Session

	mu       sync.Mutex
	queue    []pendingProposal
	spare    []pendingProposal
	draining bool

	lead *leadership
}

type pendingProposal struct {
	rs      *dragonboat.RequestState
	done    func(sm.Result, error)
	term    uint64          // the term this node led in when it proposed
	deposed <-chan struct{} // see leadership.depositionSignal
}

// leadership follows this node's leadership of one shard from dragonboat's LeaderUpdated events
// (delivered in order, possibly before the shard is registered here, hence its own map).
type leadership struct {
	mu      sync.Mutex
	leading bool
	deposed chan struct{} // closed when this node stops leading the shard, then replaced
}

func (h *Host) leadershipOf(shardID uint64) *leadership {
	if v, ok := h.leaders.Load(shardID); ok {
		return v.(*leadership)
	}
	v, _ := h.leaders.LoadOrStore(shardID, &leadership{deposed: make(chan struct{})})
	return v.(*leadership)
}

// depositionSignal returns the channel closed when this node's leadership of the shard ends (the
// current one, or the next if the event announcing it has not arrived yet). Proposals wait on it
// besides their own result: a leader that loses office (a network partition, a transfer) would
// otherwise leave its pending proposals hanging until they time out, though their outcome is
// already "unknown, retry elsewhere".
func (l *leadership) depositionSignal() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.deposed
}

func (l *leadership) set(leading bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.leading && !leading {
		close(l.deposed)
		l.deposed = make(chan struct{})
	}
	l.leading = leading
}

// NewHost starts the NodeHost: opens (or creates) the LogDB in cfg.DataDir and listens on cfg.RaftAddr.
func NewHost(cfg HostConfig) (*Host, error) {
	if cfg.NodeID == 0 {
		return nil, errors.New("quorum: NodeID must be >= 1")
	}
	if cfg.RaftAddr == "" || cfg.DataDir == "" {
		return nil, errors.New("quorum: RaftAddr and DataDir are required")
	}
	cfg.setDefaults()
	if err := CheckTransport(cfg.Transport); err != nil {
		return nil, fmt.Errorf("quorum: %w", err)
	}
	setDragonboatLogger(cfg.Logger)

	rttMs := uint64(cfg.RTT / time.Millisecond)
	if rttMs == 0 {
		rttMs = 1
	}
	nhc := config.NodeHostConfig{
		NodeHostDir:    cfg.DataDir,
		RTTMillisecond: rttMs,
		RaftAddress:    cfg.RaftAddr,
		Expert:         config.GetDefaultExpertConfig(),
	}
	if cfg.StepWorkers > 0 {
		nhc.Expert.Engine.ExecShards = cfg.StepWorkers
	}
	cfg.TLS.apply(&nhc)
	if cfg.Transport == TransportSluice {
		nhc.Expert.TransportFactory = &raftnet.Factory{Logger: cfg.Logger}
	}
	// The Raft log store: the partitions' segments (package raftlog). dragonboat records its name
	// in DataDir and refuses a directory written with another (tan or pebble, before 2026-12-07).
	raftLog, err := raftlog.Open(filepath.Join(cfg.DataDir, "raftlog"), cfg.Logger)
	if err != nil {
		return nil, fmt.Errorf("quorum: open raft log store: %w", err)
	}
	nhc.Expert.LogDBFactory = raftLog.Factory()
	h := &Host{cfg: cfg, leaderChanged: make(chan struct{}, 1), raftLog: raftLog}
	nhc.RaftEventListener = h
	if err := nhc.Prepare(); err != nil {
		raftLog.Close()
		return nil, fmt.Errorf("quorum: node host config: %w", err)
	}
	nh, err := dragonboat.NewNodeHost(nhc)
	if err != nil {
		raftLog.Close()
		if strings.Contains(err.Error(), "logdb type changed") || strings.Contains(err.Error(), "incompatible LogDB") {
			return nil, fmt.Errorf("quorum: %s was written with another Raft log store: %w: %w", cfg.DataDir, ErrOtherLogDB, err)
		}
		return nil, fmt.Errorf("quorum: start node host: %w", err)
	}
	h.nh = nh
	return h, nil
}

// LeaderUpdated implements raftio.IRaftEventListener. dragonboat calls it on its own goroutine for
// every shard whose leader (or term) changes here; it must not block, so it only flags the change.
func (h *Host) LeaderUpdated(info raftio.LeaderInfo) {
	h.leadershipOf(info.ShardID).set(info.LeaderID == h.cfg.NodeID)
	select {
	case h.leaderChanged <- struct{}{}:
	default:
	}
}

// LeaderChanges delivers a value after some local shard's leader or term changed (coalesced: one
// value may stand for many changes). Meant for one consumer, which then re-reads LeaderInfo.
func (h *Host) LeaderChanges() <-chan struct{} { return h.leaderChanged }

// CaughtUp waits until this replica has applied everything the shard's leader had committed when
// the call started (Raft's ReadIndex, run from a follower too). A replica for which it keeps
// failing is not in sync: it is behind, or cut off from the leader.
func (h *Host) CaughtUp(shardID uint64, timeout time.Duration) error {
	rs, err := h.nh.ReadIndex(shardID, timeout)
	if err != nil {
		return mapError(err)
	}
	defer rs.Release()
	r := <-rs.ResultC()
	if r.Completed() {
		return nil
	}
	_, err = resultOf(r)
	if err == nil {
		err = ErrTimeout
	}
	return err
}

// NodeHost is the escape hatch to the underlying dragonboat NodeHost.
func (h *Host) NodeHost() *dragonboat.NodeHost { return h.nh }

// NodeID is this broker's Raft replica id.
func (h *Host) NodeID() uint64 { return h.cfg.NodeID }

// RaftAddr is the address this host's Raft transport listens on.
func (h *Host) RaftAddr() string { return h.cfg.RaftAddr }

// shardConfig is the dragonboat per-shard configuration shared by partitions and the controller.
func (h *Host) shardConfig(shardID uint64) config.Config {
	return config.Config{
		ReplicaID:           h.cfg.NodeID,
		ShardID:             shardID,
		CheckQuorum:         true,
		PreVote:             true, // a partitioned node rejoining does not depose a healthy leader
		ElectionRTT:         h.cfg.ElectionTicks,
		HeartbeatRTT:        h.cfg.HeartbeatTicks,
		SnapshotEntries:     snapshotEntries(h.cfg.SnapshotEntries, shardID),
		CompactionOverhead:  h.cfg.CompactionOverhead,
		OrderedConfigChange: true,
		MaxInMemLogSize:     h.cfg.MaxInMemLogSize,
		Quiesce:             h.cfg.Quiesce,
	}
}

// snapshotEntries spreads the shards' snapshot intervals over [base, 1.5 base): partitions that take
// the same entry rate (a topic's, under one producer) would otherwise all snapshot, and Sync their
// logs, in the same second, an acknowledgement stall of every partition at once (results/
// 2026-12-04-2core-vm-latency, cause 1). Deterministic per shard, so every replica agrees.
func snapshotEntries(base, shardID uint64) uint64 {
	if base < 2 {
		return base
	}
	h := shardID * 0x9E3779B97F4A7C15 // Fibonacci hashing: consecutive ids land far apart
	return base + (h>>32)%(base/2)
}

// SnapshotDue says whether a partition shard that has applied entries entries since its last
// snapshot, taken elapsed ago, should take one now (RequestSnapshot): after SnapshotEntries and
// SnapshotInterval both, the interval spread per shard over [1, 1.5) of itself as snapshotEntries
// spreads entries, so that partitions under one producer do not all snapshot in the same second.
func (h *Host) SnapshotDue(shardID, entries uint64, elapsed time.Duration) bool {
	if entries < snapshotEntries(h.cfg.SnapshotEntries, shardID) {
		return false
	}
	if h.cfg.SnapshotInterval <= 0 {
		return true
	}
	return elapsed >= spreadInterval(h.cfg.SnapshotInterval, shardID)
}

// spreadInterval is d spread per shard over [d, 1.5 d), deterministically.
func spreadInterval(d time.Duration, shardID uint64) time.Duration {
	h := shardID * 0x9E3779B97F4A7C15
	return d + time.Duration((h>>32)%1024)*d/2048
}

// RequestSnapshot asks dragonboat for a local snapshot of the shard (with the usual log compaction
// behind it) without waiting for it; done runs once the request has ended, taken or not (a
// snapshot already in progress, nothing applied since the last, the shard stopping).
func (h *Host) RequestSnapshot(shardID uint64, done func()) {
	rs, err := h.nh.RequestSnapshot(shardID, dragonboat.SnapshotOption{}, defaultSyncTimeout)
	if err != nil {
		done()
		return
	}
	go func() {
		<-rs.ResultC()
		rs.Release()
		done()
	}()
}

// members converts nodeID -> address into dragonboat's form, or nil when dragonboat already holds
// this replica's bootstrap record (a restart: the recorded membership wins, and passing a
// different list would be rejected).
func (h *Host) members(shardID uint64, initialMembers map[uint64]string, join bool) (map[uint64]dragonboat.Target, bool) {
	// Asked of the store itself: dragonboat's HasNodeInfo takes its NodeHost-wide lock, which the
	// step workers contend for, for what is one file's existence.
	if _, err := h.raftLog.GetBootstrapInfo(shardID, h.cfg.NodeID); !errors.Is(err, raftio.ErrNoBootstrapInfo) {
		return nil, false // recorded (or unreadable: dragonboat's own read will say why)
	}
	m := make(map[uint64]dragonboat.Target, len(initialMembers))
	for id, addr := range initialMembers {
		m[id] = addr
	}
	if join {
		m = nil
	}
	return m, join
}

// StartOnDiskShard starts (or restarts after a crash: dragonboat remembers) this node's replica
// of a shard whose state machine implements sm.IOnDiskStateMachine. initialMembers maps
// nodeID -> raft address for a new shard; on restart it is ignored. join=true starts a replica
// that an existing member will add (initialMembers must then be empty). It returns once the
// replica is registered; Open() and log replay run in the background (Propose waits for them,
// ProposeAsync returns ErrNotLeader until a leader is known; WaitLeader waits explicitly).
func (h *Host) StartOnDiskShard(shardID uint64, initialMembers map[uint64]string, join bool, create sm.CreateOnDiskStateMachineFunc) error {
	return h.startOnDiskShard(shardID, initialMembers, join, false, create)
}

// StartLearnerShard starts this node's replica of a running shard that a member adds (or has added)
// as non-voting (AddNonVotingReplica), to be promoted later. dragonboat requires such a replica to
// start as non-voting every time, also after its promotion: replaying the log it applies its own
// addition as a learner before its promotion.
func (h *Host) StartLearnerShard(shardID uint64, create sm.CreateOnDiskStateMachineFunc) error {
	return h.startOnDiskShard(shardID, nil, true, true, create)
}

func (h *Host) startOnDiskShard(shardID uint64, initialMembers map[uint64]string, join, learner bool, create sm.CreateOnDiskStateMachineFunc) error {
	if shardID == ControllerShardID {
		return errors.New("quorum: shard id 1 is the controller's")
	}
	m, j := h.members(shardID, initialMembers, join)
	cfg := h.shardConfig(shardID)
	cfg.IsNonVoting = learner
	// dragonboat's own trigger is the ceiling; the state machine asks before it (SnapshotDue).
	cfg.SnapshotEntries = snapshotEntries(h.cfg.SnapshotMaxEntries, shardID)
	deadline := time.Now().Add(defaultSyncTimeout)
	for {
		err := h.nh.StartOnDiskReplica(m, j, create, cfg)
		if err == nil {
			break
		}
		// After StopShard dragonboat unloads the replica (and Closes its state machine) in the
		// background and refuses a restart until then: wait for it, unless it is really running.
		_, running := h.shards.Load(shardID)
		if !errors.Is(err, dragonboat.ErrShardAlreadyExist) || running || time.Now().After(deadline) {
			return fmt.Errorf("quorum: start shard %d: %w", shardID, mapError(err))
		}
		time.Sleep(h.cfg.RTT)
	}
	h.shards.Store(shardID, &shardState{id: shardID, self: h.cfg.NodeID, nh: h.nh, session: h.nh.GetNoOPSession(shardID), lead: h.leadershipOf(shardID)})
	return nil
}

// StopShard stops this node's replica of the shard; its data stays (restart with StartOnDiskShard,
// which waits for the old replica to be unloaded). In-flight proposals complete with
// ErrShardClosed. The state machine's Close runs in the background, after StopShard returns.
func (h *Host) StopShard(shardID uint64) error {
	err := h.nh.StopShard(shardID)
	h.shards.Delete(shardID)
	if err != nil {
		return mapError(err)
	}
	return nil
}

// RemoveShardData deletes this node's Raft data of a stopped shard (a deleted partition). The
// shard id must never be started again on this host.
func (h *Host) RemoveShardData(shardID uint64) error {
	ctx, cancel := context.WithTimeout(context.Background(), defaultSyncTimeout)
	defer cancel()
	if err := h.nh.SyncRemoveData(ctx, shardID, h.cfg.NodeID); err != nil {
		return fmt.Errorf("quorum: remove shard %d data: %w", shardID, mapError(err))
	}
	return nil
}

// CompactLog takes a local snapshot of the shard (an on-disk state machine's is its Sync) and
// drops this replica's Raft log up to it, so the segment Raft log lets retention delete what Raft
// no longer needs. A follower that falls behind the point gets the snapshot stream instead.
func (h *Host) CompactLog(shardID uint64, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_, err := h.nh.SyncRequestSnapshot(ctx, shardID, dragonboat.SnapshotOption{OverrideCompactionOverhead: true, CompactionOverhead: 0})
	if errors.Is(err, dragonboat.ErrRejected) {
		return nil // nothing applied since the last snapshot
	}
	return mapError(err)
}

// LeaderInfo reports the shard's leader as this node knows it.
func (h *Host) LeaderInfo(shardID uint64) (leaderID uint64, term uint64, ok bool) {
	id, term, ok, err := h.nh.GetLeaderID(shardID)
	if err != nil {
		return 0, 0, false
	}
	return id, term, ok
}

// IsLeader reports whether this node currently leads the shard.
func (h *Host) IsLeader(shardID uint64) bool {
	id, _, ok := h.LeaderInfo(shardID)
	return ok && id == h.cfg.NodeID
}

// WaitLeader waits until the shard has a known leader (any node) and returns its id.
func (h *Host) WaitLeader(ctx context.Context, shardID uint64) (uint64, error) {
	t := time.NewTicker(h.cfg.RTT)
	defer t.Stop()
	for {
		id, _, ok, err := h.nh.GetLeaderID(shardID)
		if err != nil {
			return 0, mapError(err)
		}
		if ok {
			return id, nil
		}
		select {
		case <-ctx.Done():
			return 0, ErrTimeout
		case <-t.C:
		}
	}
}

// Propose submits cmd to the shard through the NO-OP session and waits until it is committed and
// applied locally; it returns the state machine's Result. Safe for many concurrent callers (the
// proposals pipeline). While the shard is starting or electing its first leader it waits (up to
// ctx); when another node is the leader it returns ErrNotLeader. ctx must have a deadline or be
// cancellable; without a deadline a 30 s bound applies. cmd may be reused after return.
func (h *Host) Propose(ctx context.Context, shardID uint64, cmd []byte) (sm.Result, error) {
	v, ok := h.shards.Load(shardID)
	if !ok {
		return sm.Result{}, ErrShardNotFound
	}
	s := v.(*shardState)
	timeout := defaultSyncTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
		if timeout <= 0 {
			return sm.Result{}, ErrTimeout
		}
		timeout = max(timeout, h.cfg.RTT) // dragonboat counts in ticks and refuses zero
	}
	for {
		id, _, known, err := h.nh.GetLeaderID(shardID)
		if err != nil {
			return sm.Result{}, mapError(err)
		}
		if known && id != h.cfg.NodeID {
			return sm.Result{}, ErrNotLeader
		}
		if !known {
			// No leader yet (start-up or election): wait a tick and look again.
			if werr := h.sleepTick(ctx); werr != nil {
				return sm.Result{}, werr
			}
			continue
		}
		rs, err := h.nh.Propose(s.session, cmd, timeout)
		if err != nil {
			err = mapError(err)
			if err == ErrNotLeader { // not initialised yet
				if werr := h.sleepTick(ctx); werr != nil {
					return sm.Result{}, werr
				}
				continue
			}
			return sm.Result{}, err
		}
		// Unlike ProposeAsync, no early answer on deposition: callers of this form count on
		// ErrNotLeader meaning "not in the log" and retry.
		select {
		case r := <-rs.AppliedC():
			rs.Release()
			return resultOf(r)
		case <-ctx.Done():
			// The request completes (or times out) inside dragonboat later; not released here.
			return sm.Result{}, ctxError(ctx)
		}
	}
}

func (h *Host) sleepTick(ctx context.Context) error {
	t := time.NewTimer(h.cfg.RTT)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctxError(ctx)
	case <-t.C:
		return nil
	}
}

// ProposeAsync is the non-blocking form for the hot path. If it returns nil, done is called exactly
// once, from a helper goroutine, with the state machine's Result or an error (ErrTimeout after
// timeout, ErrShardClosed, ErrNotLeader if leadership was lost before commit). If it returns an
// error, done is never called. done should return quickly: completions of one shard are delivered
// in order by one goroutine. cmd may be reused after return (dragonboat copies it).
func (h *Host) ProposeAsync(shardID uint64, cmd []byte, timeout time.Duration, done func(sm.Result, error)) error {
	if done == nil {
		return errors.New("quorum: ProposeAsync needs a done callback")
	}
	v, ok := h.shards.Load(shardID)
	if !ok {
		return ErrShardNotFound
	}
	s := v.(*shardState)
	id, term, ok, err := h.nh.GetLeaderID(shardID)
	if err != nil {
		return mapError(err)
	}
	if !ok || id != h.cfg.NodeID {
		return ErrNotLeader // a Kafka partition takes writes on its leader only
	}
	if timeout < h.cfg.RTT {
		timeout = h.cfg.RTT
	}
	deposed := s.lead.depositionSignal()
	rs, err := h.nh.Propose(s.session, cmd, timeout)
	if err != nil {
		return mapError(err)
	}
	s.mu.Lock()
	s.queue = append(s.queue, pendingProposal{rs: rs, done: done, term: term, deposed: deposed})
	start := !s.draining
	s.draining = true
	s.mu.Unlock()
	if start {
		go s.drain()
	}
	return nil
}

// drain delivers completions in proposal order. One goroutine per shard while proposals are in
// flight, none when idle: proposals of a shard are applied in log order, so waiting on the oldest
// first rarely delays a later one, and a pipelined burst costs one goroutine, not one per proposal.
func (s *shardState) drain() {
	for {
		s.mu.Lock()
		if len(s.queue) == 0 {
			s.draining = false
			s.mu.Unlock()
			return
		}
		batch := s.queue
		s.queue = s.spare[:0]
		s.mu.Unlock()

		for i := range batch {
			p := batch[i]
			batch[i] = pendingProposal{}
			p.done(s.wait(&p))
		}

		s.mu.Lock()
		s.spare = batch[:0]
		s.mu.Unlock()
	}
}

// wait returns the proposal's outcome, or ErrLeadershipLost as soon as this node stops leading the
// shard (the entry may still commit under a later leader: the outcome is unknown, as after a timeout).
func (s *shardState) wait(p *pendingProposal) (sm.Result, error) {
	select {
	case r := <-p.rs.AppliedC():
		p.rs.Release()
		return resultOf(r)
	default:
	}
	for {
		select {
		case r := <-p.rs.AppliedC():
			p.rs.Release()
			return resultOf(r)
		case <-p.deposed:
			// Events trail the state they report: a late one from before this leadership looks
			// like a deposition. dragonboat's current view decides.
			if id, term, ok, err := s.nh.GetLeaderID(s.id); err == nil && ok && id == s.self && term == p.term {
				p.deposed = s.lead.depositionSignal()
				continue
			}
			return sm.Result{}, ErrLeadershipLost // not released: dragonboat completes it later
		}
	}
}

// Close stops every shard and the NodeHost. Safe to call more than once.
func (h *Host) Close() {
	h.closeOnce.Do(func() {
		h.nh.Close()
	})
}

// resultOf maps a dragonboat request outcome to a Result or one of this package's errors.
func resultOf(r dragonboat.RequestResult) (sm.Result, error) {
	switch {
	case r.Completed():
		return r.GetResult(), nil
	case r.Timeout():
		return sm.Result{}, ErrTimeout
	case r.Terminated():
		return sm.Result{}, ErrShardClosed
	case r.Dropped():
		return sm.Result{}, ErrNotLeader
	case r.Rejected():
		return sm.Result{}, fmt.Errorf("quorum: %w", dragonboat.ErrRejected)
	case r.Aborted():
		return sm.Result{}, fmt.Errorf("quorum: %w", dragonboat.ErrAborted)
	}
	return sm.Result{}, fmt.Errorf("quorum: unexpected request result %v", r)
}

func ctxError(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return ErrTimeout
	}
	return ctx.Err()
}

// mapError maps dragonboat's errors onto this package's; others pass through.
func mapError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, dragonboat.ErrShardNotFound):
		return ErrShardNotFound
	case errors.Is(err, dragonboat.ErrShardClosed), errors.Is(err, dragonboat.ErrClosed):
		return ErrShardClosed
	case errors.Is(err, dragonboat.ErrTimeout), errors.Is(err, dragonboat.ErrTimeoutTooSmall):
		return ErrTimeout
	case errors.Is(err, dragonboat.ErrShardNotReady), errors.Is(err, dragonboat.ErrShardNotInitialized):
		return ErrNotLeader
	case errors.Is(err, dragonboat.ErrSystemBusy):
		return ErrBusy
	case errors.Is(err, dragonboat.ErrPayloadTooBig):
		return ErrPayloadTooBig
	case errors.Is(err, dragonboat.ErrCanceled):
		return context.Canceled
	}
	return err
}
