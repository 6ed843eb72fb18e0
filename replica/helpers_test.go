package replica

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/sluicebroker/sluice/internal/kafkatest"
	"github.com/sluicebroker/sluice/internal/testcluster"
	"github.com/sluicebroker/sluice/quorum"
	"github.com/sluicebroker/sluice/segment"
)

// makeBatch builds a valid record batch v2 of n small uncompressed records,
// as a client sends it (base offset 0). pid -1 means not idempotent.
func makeBatch(pid int64, epoch int16, seq int32, n int, valueSize int) []byte {
	if pid < 0 {
		seq = -1
	}
	values := make([][]byte, n)
	for i := range values {
		values[i] = make([]byte, valueSize)
	}
	return kafkatest.IdempotentBatch(pid, epoch, seq, values...)
}

// freeAddr returns a loopback address whose port was free a moment ago.
var freeAddr = testcluster.MustFreeAddr

// node is one broker's replica side: a quorum Host and a Manager over dir.
type node struct {
	t    testing.TB
	dir  string
	addr string
	host *quorum.Host
	mgr  *Manager
}

func startNode(t testing.TB, dir, addr string, cfg Config) *node {
	t.Helper()
	return startNodeID(t, 1, dir, addr, cfg)
}

func startNodeID(t testing.TB, id uint64, dir, addr string, cfg Config) *node {
	t.Helper()
	return startNodeHost(t, id, dir, addr, cfg, quorum.HostConfig{})
}

// startNodeHost is startNodeID with Raft settings (hc's NodeID, RaftAddr and DataDir are set here).
func startNodeHost(t testing.TB, id uint64, dir, addr string, cfg Config, hc quorum.HostConfig) *node {
	t.Helper()
	hc.NodeID, hc.RaftAddr, hc.DataDir = id, addr, filepath.Join(dir, "raft")
	host, err := quorum.NewHost(hc)
	if err != nil {
		t.Fatal(err)
	}
	cfg.DataDir = filepath.Join(dir, "data")
	return &node{t: t, dir: dir, addr: addr, host: host, mgr: NewManager(host, cfg)}
}

func (n *node) close() {
	if n.mgr != nil {
		if err := n.mgr.Close(); err != nil {
			n.t.Errorf("manager close: %v", err)
		}
		n.mgr = nil
	}
	if n.host != nil {
		n.host.Close()
		n.host = nil
	}
}

// metadata assigns every partition of the topics to node 1; shard ids are
// firstShard, firstShard+1, ... in topic order, partition order.
func (n *node) metadata(topics []testTopic) *quorum.Metadata {
	md := &quorum.Metadata{
		Version: 1,
		Brokers: map[int32]quorum.BrokerInfo{1: {NodeID: 1, Host: "127.0.0.1", Port: 9092, RaftAddr: n.addr}},
		Topics:  map[string]*quorum.TopicMeta{},
	}
	for _, tt := range topics {
		tm := &quorum.TopicMeta{Name: tt.name, Configs: tt.configs}
		for i := 0; i < tt.partitions; i++ {
			tm.Partitions = append(tm.Partitions, quorum.PartitionMeta{Partition: int32(i), ShardID: tt.firstShard + uint64(i), Replicas: []int32{1}})
		}
		md.Topics[tt.name] = tm
	}
	return md
}

type testTopic struct {
	name       string
	partitions int
	firstShard uint64
	configs    map[string]string
}

// apply applies metadata and waits until every partition of it leads.
func (n *node) apply(topics ...testTopic) {
	n.t.Helper()
	if err := n.mgr.Apply(n.metadata(topics)); err != nil {
		n.t.Fatal(err)
	}
	for _, tt := range topics {
		for i := 0; i < tt.partitions; i++ {
			n.waitLeader(n.partition(tt.name, int32(i)))
		}
	}
}

func (n *node) partition(topic string, i int32) *Partition {
	n.t.Helper()
	p, ok := n.mgr.Partition(topic, i)
	if !ok {
		n.t.Fatalf("partition %s-%d not running", topic, i)
	}
	return p
}

func (n *node) waitLeader(p *Partition) {
	n.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if lead, _, _ := p.Leader(); lead && p.log.Load() != nil {
			return
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("%s-%d: no leader after 30s", p.topic, p.partition)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func produce(t testing.TB, p *Partition, batch []byte) ProduceResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, err := p.Produce(ctx, batch)
	if err != nil {
		t.Fatalf("produce: %v", err)
	}
	return r
}

// readAll returns every batch header in [from, HighWatermark) by reading the
// file ranges Read returns, checking each batch's CRC.
func readAll(t testing.TB, p *Partition, from int64) []segment.Header {
	t.Helper()
	var out []segment.Header
	for off := from; off < p.HighWatermark(); {
		rr, err := p.Read(off, 64<<10)
		if err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
		var data []byte
		for _, r := range rr.Ranges {
			buf := make([]byte, r.Len)
			if _, err := r.File.ReadAt(buf, r.Pos); err != nil && err != io.EOF {
				t.Fatalf("read range: %v", err)
			}
			data = append(data, buf...)
		}
		rr.Release()
		if len(data) == 0 {
			t.Fatalf("empty read at %d below high watermark %d", off, p.HighWatermark())
		}
		for len(data) > 0 {
			h, err := segment.Validate(data[:mustSize(t, data)])
			if err != nil {
				t.Fatalf("batch at %d: %v", off, err)
			}
			if h.NextOffset() > off {
				out = append(out, h)
				off = h.NextOffset()
			}
			data = data[h.Size():]
		}
	}
	return out
}

func mustSize(t testing.TB, b []byte) int {
	h, err := segment.ParseHeader(b)
	if err != nil || h.Size() > len(b) {
		t.Fatalf("partial batch in read result: %v", err)
	}
	return h.Size()
}

func checkDense(t testing.TB, hs []segment.Header, from int64) {
	t.Helper()
	next := from
	for i, h := range hs {
		if h.BaseOffset != next {
			t.Fatalf("batch %d: base offset %d, want %d", i, h.BaseOffset, next)
		}
		next = h.NextOffset()
	}
}

func (tt testTopic) String() string { return fmt.Sprintf("%s/%d", tt.name, tt.partitions) }
