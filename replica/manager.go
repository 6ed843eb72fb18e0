package replica

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sluicebroker/sluice/quorum"
	"github.com/sluicebroker/sluice/raftlog"
)

// Manager hosts this node's partitions: it starts their Raft groups as the
// cluster metadata assigns them, applies topic configs, deletes partitions of
// deleted topics and runs retention.
type Manager struct {
	host   *quorum.Host
	cfg    Config
	logger *slog.Logger

	applyMu sync.Mutex // serialises Apply and Close
	swept   bool       // orphaned partition directories were removed (first Apply)
	applied uint64     // the newest metadata version applied; older ones are ignored

	mu          sync.RWMutex
	parts       map[partitionKey]*Partition
	lastStarted time.Time // when the newest of parts started
	closed      bool

	stop   chan struct{}
	wg     sync.WaitGroup // background loops
	checks sync.WaitGroup // lag checks in flight: they end when their shard stops
}

type partitionKey struct {
	topic     string
	partition int32
}

// closeWait bounds how long stopping a shard waits for its state machine to
// close its log.
const closeWait = 30 * time.Second

// NewManager returns a Manager with no partitions; Apply starts them. It runs
// retention in the background until Close.
func NewManager(host *quorum.Host, cfg Config) *Manager {
	cfg.setDefaults()
	m := &Manager{
		host:   host,
		cfg:    cfg,
		logger: cfg.Logger.With("component", "replica"),
		parts:  make(map[partitionKey]*Partition),
		stop:   make(chan struct{}),
	}
	m.wg.Add(2)
	go m.retentionLoop()
	go m.lagLoop()
	if cfg.CleanerThreads > 0 {
		m.wg.Add(1)
		go m.cleanerLoop()
	}
	return m
}

// Partition returns a running partition of this node.
func (m *Manager) Partition(topic string, partition int32) (*Partition, bool) {
	m.mu.RLock()
	p, ok := m.parts[partitionKey{topic, partition}]
	m.mu.RUnlock()
	return p, ok
}

// LastStarted is when the partition this node started last started (zero before the first).
func (m *Manager) LastStarted() time.Time {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.lastStarted
}

// Partitions returns every partition this node hosts, in no order.
func (m *Manager) Partitions() []*Partition {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]*Partition, 0, len(m.parts))
	for _, p := range m.parts {
		out = append(out, p)
	}
	return out
}

// Apply makes the running partitions match md: it starts the Raft group of
// every partition assigned to this node, applies changed topic configs, and
// stops and deletes partitions no longer assigned here (deleted topics). It is
// idempotent; call it on every metadata change. Errors of single partitions
// are joined; the others are still applied.
func (m *Manager) Apply(md *quorum.Metadata) error {
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	if m.isClosed() {
		return errors.New("replica: manager closed")
	}
	// Callers race (the metadata watcher, a CreateTopics waiting for its partitions): an older
	// version applied after a newer one would stop partitions just created.
	if md.Version < m.applied {
		return nil
	}
	m.applied = md.Version
	self := int32(m.host.NodeID())
	var errs []error
	var starts []*partitionStart
	want := make(map[partitionKey]bool)
	for name, t := range md.Topics {
		tc, err := ParseTopicConfig(m.cfg.Log, m.cfg.MaxMessageBytes, t.Configs)
		if err != nil {
			// A bad stored config must not keep the partition down: run on defaults.
			errs = append(errs, fmt.Errorf("replica: topic %s: %w", name, err))
			tc, _ = ParseTopicConfig(m.cfg.Log, m.cfg.MaxMessageBytes, nil)
		}
		for _, pm := range t.Partitions {
			if !hasReplica(pm.Replicas, self) && !hasReplica(pm.Target, self) {
				continue // a reassignment target joins the group before it becomes a replica
			}
			key := partitionKey{name, pm.Partition}
			want[key] = true
			p, ok := m.Partition(name, pm.Partition)
			if ok && p.shardID != pm.ShardID {
				// The topic was deleted and recreated under the same name between
				// two metadata versions: the old partition goes first.
				if err := m.remove(p); err != nil {
					errs = append(errs, err)
					continue
				}
				ok = false
			}
			if ok {
				p.setConfig(tc)
				p.SetStartFloor(pm.LogStartOffset)
				continue
			}
			starts = append(starts, &partitionStart{topic: name, pm: pm, tc: tc})
		}
	}
	errs = append(errs, m.startAll(md, starts)...)
	for _, p := range m.Partitions() {
		if !want[partitionKey{p.topic, p.partition}] {
			if err := m.remove(p); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if !m.swept && md.NextShardID > 0 { // NextShardID 0: not bootstrapped metadata
		m.swept = true
		m.sweepOrphans(md)
	}
	return errors.Join(errs...)
}

// sweepOrphans removes the directories and Raft data of partitions deleted
// (or moved away) while this node was down. Only shards older than md's
// NextShardID are judged: md knows their fate even if it lags the cluster.
func (m *Manager) sweepOrphans(md *quorum.Metadata) {
	entries, err := os.ReadDir(m.cfg.DataDir)
	if err != nil {
		return // no data yet
	}
	self := int32(m.host.NodeID())
	assigned := make(map[uint64]bool)
	for _, t := range md.Topics {
		for _, pm := range t.Partitions {
			if hasReplica(pm.Replicas, self) || hasReplica(pm.Target, self) {
				assigned[pm.ShardID] = true
			}
		}
	}
	running := make(map[string]bool)
	for _, p := range m.Partitions() {
		running[p.dir] = true // its state machine owns the directory (it may be opening it now)
		running[p.dir+".snapshot"] = true
	}
	for _, de := range entries {
		dir := filepath.Join(m.cfg.DataDir, de.Name())
		if !de.IsDir() || running[dir] {
			continue
		}
		if strings.HasSuffix(de.Name(), ".snapshot") { // an interrupted snapshot install
			os.RemoveAll(dir)
			continue
		}
		shard, ok, err := readShardID(dir)
		if err != nil || !ok || shard >= md.NextShardID || assigned[shard] {
			continue
		}
		if err := m.host.RemoveShardData(shard); err != nil {
			m.logger.Warn("removing raft data of a deleted partition", "dir", dir, "shard", shard, "err", err)
		}
		if err := os.RemoveAll(dir); err != nil {
			m.logger.Warn("removing a deleted partition", "dir", dir, "err", err)
			continue
		}
		m.logger.Info("removed a partition deleted while this node was down", "dir", dir, "shard", shard)
	}
}

func hasReplica(replicas []int32, id int32) bool {
	for _, r := range replicas {
		if r == id {
			return true
		}
	}
	return false
}

// partitionDir is Kafka's layout: <data>/<topic>-<partition>.
func (m *Manager) partitionDir(topic string, partition int32) string {
	return filepath.Join(m.cfg.DataDir, topic+"-"+strconv.Itoa(int(partition)))
}

// partitionStart is a partition Apply starts: prepare fills in p, or err.
type partitionStart struct {
	topic string
	pm    quorum.PartitionMeta
	tc    TopicConfig
	p     *Partition
	err   error
}

// prepareWorkers bounds the partitions prepared at once (startAll).
const prepareWorkers = 8

// startAll starts the partitions: first their directories and Raft log files are prepared
// concurrently (a restart opens and checks thousands of segments), then their Raft groups start
// one by one, as dragonboat starts a shard under its NodeHost-wide lock. Opening the files inside
// that lock, one partition at a time, was most of a restart.
func (m *Manager) startAll(md *quorum.Metadata, starts []*partitionStart) []error {
	var wg sync.WaitGroup
	work := make(chan *partitionStart)
	for range min(prepareWorkers, len(starts)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ps := range work {
				ps.p, ps.err = m.prepare(ps.topic, ps.pm, ps.tc)
			}
		}()
	}
	for _, ps := range starts {
		work <- ps
	}
	close(work)
	wg.Wait()
	var errs []error
	for _, ps := range starts {
		if ps.err == nil {
			ps.err = m.start(md, ps.p, ps.pm)
		}
		if ps.err != nil {
			errs = append(errs, ps.err)
			continue
		}
		ps.p.SetStartFloor(ps.pm.LogStartOffset)
	}
	return errs
}

// prepare makes the partition, claims its directory and opens its Raft log files.
func (m *Manager) prepare(topic string, pm quorum.PartitionMeta, tc TopicConfig) (*Partition, error) {
	p := newPartition(m.host, topic, pm.Partition, pm.ShardID, m.partitionDir(topic, pm.Partition), tc, m.logger)
	if store := m.host.RaftLog(); store != nil {
		// The store opens the segment when Raft first reads the shard, before the state machine;
		// Open does it now, outside dragonboat's lock.
		if err := claimDir(p.dir, p.shardID); err != nil {
			return nil, fmt.Errorf("replica: %s: %w", p.dir, err)
		}
		store.RegisterPartition(pm.ShardID, raftlog.PartitionSpec{Dir: p.dir, Options: tc.Log})
		if err := store.Open(pm.ShardID, m.host.NodeID()); err != nil {
			return nil, fmt.Errorf("replica: %s: %w", p.dir, err)
		}
	}
	return p, nil
}

// start starts the prepared partition's Raft group.
func (m *Manager) start(md *quorum.Metadata, p *Partition, pm quorum.PartitionMeta) error {
	topic := p.topic
	// A new partition starts with its replicas as the initial members; a broker a reassignment
	// adds joins the running group as a learner instead (its leader adds it to the membership).
	self := int32(m.host.NodeID())
	learner := !hasReplica(pm.Replicas, self) || hasReplica(pm.Joined, self)
	var members map[uint64]string
	if !learner {
		members = make(map[uint64]string, len(pm.Replicas))
		for _, id := range pm.Replicas {
			b, ok := md.Brokers[id]
			if !ok || b.RaftAddr == "" {
				return fmt.Errorf("replica: %s-%d: replica %d has no raft address", topic, pm.Partition, id)
			}
			members[uint64(id)] = b.RaftAddr
		}
	}
	start := func() error { return m.host.StartOnDiskShard(pm.ShardID, members, false, p.createStateMachine) }
	if learner {
		start = func() error { return m.host.StartLearnerShard(pm.ShardID, p.createStateMachine) }
	}
	if err := start(); err != nil {
		return fmt.Errorf("replica: start %s-%d: %w", topic, pm.Partition, err)
	}
	p.started = time.Now()
	m.mu.Lock()
	m.parts[partitionKey{topic, pm.Partition}] = p
	m.lastStarted = p.started
	m.mu.Unlock()
	m.logger.Info("partition started", "topic", topic, "partition", pm.Partition, "shard", pm.ShardID)
	return nil
}

// remove stops a partition's Raft group and deletes its Raft data and log.
func (m *Manager) remove(p *Partition) error {
	m.mu.Lock()
	delete(m.parts, partitionKey{p.topic, p.partition})
	m.mu.Unlock()
	p.markDeleting()
	if err := m.host.StopShard(p.shardID); err != nil && !errors.Is(err, quorum.ErrShardNotFound) {
		return fmt.Errorf("replica: stop %s-%d: %w", p.topic, p.partition, err)
	}
	// RemoveShardData waits until dragonboat has closed the state machine,
	// which deletes the log.
	if err := m.host.RemoveShardData(p.shardID); err != nil {
		return fmt.Errorf("replica: remove %s-%d: %w", p.topic, p.partition, err)
	}
	p.waitLogClosed(closeWait)
	// The state machine may never have opened the log (or failed to).
	if err := os.RemoveAll(p.dir); err != nil {
		return fmt.Errorf("replica: remove %s: %w", p.dir, err)
	}
	m.logger.Info("partition deleted", "topic", p.topic, "partition", p.partition, "shard", p.shardID)
	return nil
}

// Close stops every partition's Raft group (each syncs and closes its log)
// and the retention loop. The partitions' data stays for the next start.
func (m *Manager) Close() error {
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	parts := make([]*Partition, 0, len(m.parts))
	for _, p := range m.parts {
		parts = append(parts, p)
	}
	m.parts = make(map[partitionKey]*Partition)
	m.mu.Unlock()
	close(m.stop)
	m.wg.Wait()

	var errs []error
	for _, p := range parts {
		if err := m.host.StopShard(p.shardID); err != nil && !errors.Is(err, quorum.ErrShardNotFound) && !errors.Is(err, quorum.ErrShardClosed) {
			errs = append(errs, fmt.Errorf("replica: stop %s-%d: %w", p.topic, p.partition, err))
		}
	}
	m.checks.Wait()
	for _, p := range parts {
		p.waitLogClosed(closeWait)
		p.markClosed()
	}
	return errors.Join(errs...)
}

func (m *Manager) isClosed() bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.closed
}

func (m *Manager) retentionLoop() {
	defer m.wg.Done()
	t := time.NewTicker(m.cfg.RetentionCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case now := <-t.C:
			m.EnforceRetention(now)
		}
	}
}

// EnforceRetention deletes, in every partition, the old segments that its
// retention settings allow; the background loop calls it periodically.
func (m *Manager) EnforceRetention(now time.Time) {
	for _, p := range m.Partitions() {
		n, err := p.enforceRetention(now)
		if err != nil {
			p.logger.Warn("retention failed", "err", err)
		} else if n > 0 {
			p.logger.Debug("retention deleted segments", "segments", n, "log_start_offset", p.LogStartOffset())
		}
	}
}
