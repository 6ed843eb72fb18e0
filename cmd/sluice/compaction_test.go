package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestCompactedTopicRefusesNullKeys: a compacted topic takes keyed records and refuses a batch holding
// a record without a key with INVALID_RECORD (Kafka's), compressed or not; a delete topic takes both.
func TestCompactedTopicRefusesNullKeys(t *testing.T) {
	b := startBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b.createTopic("keyed", 1, map[string]*string{"cleanup.policy": strPtr("compact"), "delete.retention.ms": strPtr("1000"),
		"min.compaction.lag.ms": strPtr("0"), "max.compaction.lag.ms": strPtr("60000"), "min.cleanable.dirty.ratio": strPtr("0.1")})
	b.createTopic("plain", 1, nil)
	for _, codec := range []kgo.CompressionCodec{kgo.NoCompression(), kgo.ZstdCompression()} {
		cl := b.client(kgo.ProducerBatchCompression(codec), kgo.RecordRetries(1))
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "keyed", Key: []byte("k"), Value: []byte("v")}).FirstErr(); err != nil {
			t.Fatalf("keyed record to a compacted topic: %v", err)
		}
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "keyed", Value: []byte("v")}).FirstErr(); !errors.Is(err, kerr.InvalidRecord) {
			t.Fatalf("record without a key to a compacted topic: %v, want INVALID_RECORD", err)
		}
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "plain", Value: []byte("v")}).FirstErr(); err != nil {
			t.Fatalf("record without a key to a delete topic: %v", err)
		}
	}
	if _, err := b.admin().CreateTopic(ctx, 1, 1, map[string]*string{"cleanup.policy": strPtr("compact"), "min.cleanable.dirty.ratio": strPtr("2")}, "bad-ratio"); !errors.Is(err, kerr.InvalidConfig) {
		t.Fatalf("min.cleanable.dirty.ratio=2: %v, want INVALID_CONFIG", err)
	}
}

// compactedTopic is a keyed topic's history as produced: the latest value per key (nil: a tombstone)
// and the offsets of every record.
type compactedTopic struct {
	name    string
	latest  map[string][]byte
	offsets map[string][]int64 // key -> offsets of its records, in order
}

// produceHistory writes rounds of overwrites and tombstones of keys k0..k<keys-1>, then filler records
// with unique keys so the overwritten ones end up in sealed segments.
func produceHistory(ctx context.Context, t *testing.T, cl *kgo.Client, topic string, rounds, keys, filler int, fillerPrefix string) *compactedTopic {
	t.Helper()
	ct := &compactedTopic{name: topic, latest: map[string][]byte{}, offsets: map[string][]int64{}}
	var recs []*kgo.Record
	for r := range rounds {
		for k := range keys {
			key := fmt.Sprintf("k%d", k)
			var v []byte
			if (r+k)%7 != 3 {
				v = []byte(fmt.Sprintf("%s-round%d-%s", key, r, strings.Repeat("x", 40)))
			}
			recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(key), Value: v})
		}
	}
	for i := range filler {
		recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(fmt.Sprintf("%s%d", fillerPrefix, i)), Value: []byte(strings.Repeat("f", 100))})
	}
	for i := 0; i < len(recs); i += 50 {
		res := cl.ProduceSync(ctx, recs[i:min(i+50, len(recs))]...)
		if err := res.FirstErr(); err != nil {
			t.Fatal(err)
		}
		for _, r := range res {
			k := string(r.Record.Key)
			ct.latest[k] = r.Record.Value
			ct.offsets[k] = append(ct.offsets[k], r.Record.Offset)
		}
	}
	return ct
}

// readCompacted reads partition 0 from its start to the high watermark with franz-go: the records by
// key, checking that offsets only go up.
func readCompacted(ctx context.Context, t *testing.T, b *testBroker, topic string, from int64, opts ...kgo.Opt) []*kgo.Record {
	t.Helper()
	ends, err := b.admin().ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	end, _ := ends.Lookup(topic, 0)
	cl, err := kgo.NewClient(append(append([]kgo.Opt{kgo.SeedBrokers(b.Addr)}, opts...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().At(from)}}))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close() // polled in loops: one client per read would pile up connections
	var out []*kgo.Record
	last := int64(-1)
	for last < end.Offset-1 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read up to %d of %d before timing out", last, end.Offset)
		}
		fs.EachError(func(_ string, _ int32, err error) { t.Fatalf("fetch: %v", err) })
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset <= last {
				t.Fatalf("offset %d after %d", r.Offset, last)
			}
			last = r.Offset
			out = append(out, r)
		})
	}
	return out
}

// isCompacted reports whether recs hold exactly one record per overwritten key (the latest; a
// tombstone may be kept or gone) and every filler record, with the offsets they were produced at.
func (ct *compactedTopic) isCompacted(recs []*kgo.Record, tombstonesGone bool) error {
	seen := map[string]int{}
	for _, r := range recs {
		k := string(r.Key)
		offs := ct.offsets[k]
		if len(offs) == 0 {
			return fmt.Errorf("record of unknown key %q at %d", k, r.Offset)
		}
		if r.Offset != offs[len(offs)-1] || !bytes.Equal(r.Value, ct.latest[k]) {
			return fmt.Errorf("key %s: record at %d, latest was at %d", k, r.Offset, offs[len(offs)-1])
		}
		if r.Value == nil && tombstonesGone {
			return fmt.Errorf("tombstone of %s at %d outlived delete.retention.ms", k, r.Offset)
		}
		seen[k]++
	}
	for k, v := range ct.latest {
		if seen[k] == 0 && v != nil {
			return fmt.Errorf("latest value of %s (offset %d) lost", k, ct.offsets[k][len(ct.offsets[k])-1])
		}
	}
	return nil
}

// compactedTopicConfigs: small segments that roll by size and age, a cleaner that runs at once.
func compactedTopicConfigs(deleteRetentionMs string) map[string]*string {
	return map[string]*string{"cleanup.policy": strPtr("compact"), "segment.bytes": strPtr("4096"), "segment.ms": strPtr("500"),
		"min.cleanable.dirty.ratio": strPtr("0.01"), "delete.retention.ms": strPtr(deleteRetentionMs)}
}

// waitCompacted polls until a consumer from the start sees the compacted view.
func waitCompacted(ctx context.Context, t *testing.T, b *testBroker, ct *compactedTopic, tombstonesGone bool) []*kgo.Record {
	t.Helper()
	var err error
	for ctx.Err() == nil {
		recs := readCompacted(ctx, t, b, ct.name, 0)
		if err = ct.isCompacted(recs, tombstonesGone); err == nil {
			return recs
		}
		time.Sleep(300 * time.Millisecond)
	}
	t.Fatalf("never compacted: %v", err)
	return nil
}

// TestLogCompaction: overwrites and tombstones on a keyed topic with small segments; the cleaner
// leaves a consumer from the start exactly the latest value per key at its original offset, with
// gaps; a consumer at a removed offset continues at the next record; tombstones go after
// delete.retention.ms; kafka-go rebuilds the same map; all of it again after a restart.
func TestLogCompaction(t *testing.T) {
	b := startBroker(t, "--log-cleaner-backoff", "200ms", "--metrics-addr", freePort(t))
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	b.createTopic("compacted", 1, compactedTopicConfigs("3000"))
	ct := produceHistory(ctx, t, b.client(kgo.ProducerBatchCompression(kgo.NoCompression())), "compacted", 20, 30, 120, "filler")
	recs := waitCompacted(ctx, t, b, ct, false)
	if n := ct.offsets["k0"]; len(n) < 2 {
		t.Fatal("k0 was not overwritten")
	}

	// The cleaner's metrics: bytes read and written, the partition's dirty ratio.
	fams := scrape(t, metricsURL(t, b))
	for _, dir := range []string{"read", "written"} {
		if v, ok := metricValue(fams, "sluice_log_cleaner_bytes_total", map[string]string{"direction": dir}); !ok || v <= 0 {
			t.Errorf("sluice_log_cleaner_bytes_total{direction=%q} = %v (%v), want > 0", dir, v, ok)
		}
	}
	if v, ok := metricValue(fams, "sluice_partition_dirty_ratio", map[string]string{"topic": "compacted", "partition": "0"}); !ok || v < 0 || v > 1 {
		t.Errorf("sluice_partition_dirty_ratio = %v (%v)", v, ok)
	}

	// A consumer positioned at a removed offset continues at the next record.
	removed := ct.offsets["k1"][0]
	if got := readCompacted(ctx, t, b, "compacted", removed); len(got) == 0 || got[0].Offset <= removed {
		t.Fatalf("fetch at removed offset %d gave %v", removed, got)
	}

	// kafka-go rebuilds the same map.
	kgMap := kafkaGoMap(ctx, t, b, "compacted")
	live := 0
	for _, r := range recs {
		if r.Value == nil {
			continue
		}
		live++
		if v, ok := kgMap[string(r.Key)]; !ok || !bytes.Equal(v, r.Value) {
			t.Fatalf("kafka-go: key %s = %q, want %q", r.Key, v, r.Value)
		}
	}
	if len(kgMap) != live {
		t.Fatalf("kafka-go rebuilt %d keys, franz-go %d live ones", len(kgMap), live)
	}

	// Past delete.retention.ms, more writes make the log dirty again and the tombstones go.
	time.Sleep(3 * time.Second)
	more := produceHistory(ctx, t, b.client(kgo.ProducerBatchCompression(kgo.NoCompression())), "compacted", 0, 0, 120, "more")
	for k, v := range more.latest {
		ct.latest[k], ct.offsets[k] = v, more.offsets[k]
	}
	waitCompacted(ctx, t, b, ct, true)

	// A restart finds the compacted segments whole.
	b.stop()
	b.start()
	if err := ct.isCompacted(readCompacted(ctx, t, b, "compacted", 0), true); err != nil {
		t.Fatalf("after a restart: %v", err)
	}
}

// kafkaGoMap reads partition 0 from the start to the high watermark with kafka-go's Reader and
// returns the map it rebuilds (a tombstone deletes its key).
func kafkaGoMap(ctx context.Context, t *testing.T, b *testBroker, topic string) map[string][]byte {
	t.Helper()
	ends, err := b.admin().ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	end, _ := ends.Lookup(topic, 0)
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{b.Addr}, Topic: topic, Partition: 0, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	out := map[string][]byte{}
	for {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("kafka-go: %v", err)
		}
		if m.Value == nil {
			delete(out, string(m.Key))
		} else {
			out[string(m.Key)] = m.Value
		}
		if m.Offset >= end.Offset-1 {
			return out
		}
	}
}

// TestLogCompactionTransactions: the cleaner removes an aborted transaction's records and keeps a
// committed one's; read_committed sees the same before and after.
func TestLogCompactionTransactions(t *testing.T) {
	b := startBroker(t, "--log-cleaner-backoff", "200ms")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const topic = "compacted-txn"
	// min.compaction.lag.ms holds the cleaner off while the history is written and read once.
	configs := compactedTopicConfigs("60000")
	configs["min.compaction.lag.ms"] = strPtr("5000")
	b.createTopic(topic, 1, configs)
	// Uncompressed, so the history spans several segments (segments roll on append, by size or age).
	tx := b.client(kgo.TransactionalID("compact"), kgo.DefaultProduceTopic(topic), kgo.ProducerBatchCompression(kgo.NoCompression()))
	keyed := func(prefix string, n int) []*kgo.Record {
		recs := make([]*kgo.Record, n)
		for i := range recs {
			recs[i] = &kgo.Record{Topic: topic, Key: []byte(fmt.Sprintf("%s%d", prefix, i)), Value: []byte(prefix + strings.Repeat("v", 60))}
		}
		return recs
	}
	runTxn(ctx, t, tx, true, keyed("committed", 20)...)
	runTxn(ctx, t, tx, false, keyed("aborted", 20)...)
	runTxn(ctx, t, tx, true, keyed("again", 20)...)
	if err := b.client(kgo.ProducerBatchCompression(kgo.NoCompression())).ProduceSync(ctx, keyed("filler", 150)...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	committedBefore := readCompacted(ctx, t, b, topic, 0, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if got := len(readCompacted(ctx, t, b, topic, 0)); got != 210 {
		t.Fatalf("read_uncommitted before cleaning: %d records, want 210", got)
	}
	prefixes := func(recs []*kgo.Record) map[string]int {
		n := map[string]int{}
		for _, r := range recs {
			n[strings.TrimRight(string(r.Key), "0123456789")]++
		}
		return n
	}
	if got := prefixes(committedBefore); got["committed"] != 20 || got["again"] != 20 || got["aborted"] != 0 || got["filler"] != 150 {
		t.Fatalf("read_committed before cleaning: %v", got)
	}
	for {
		got := prefixes(readCompacted(ctx, t, b, topic, 0))
		if got["aborted"] == 0 {
			if got["committed"] != 20 || got["again"] != 20 || got["filler"] != 150 {
				t.Fatalf("read_uncommitted after cleaning: %v", got)
			}
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("aborted records never removed: %v", got)
		}
		time.Sleep(300 * time.Millisecond)
	}
	committedAfter := readCompacted(ctx, t, b, topic, 0, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if len(committedAfter) < len(committedBefore) {
		t.Fatalf("read_committed saw %d records after cleaning, %d before", len(committedAfter), len(committedBefore))
	}
	for i, r := range committedBefore {
		if a := committedAfter[i]; a.Offset != r.Offset || !bytes.Equal(a.Key, r.Key) || !bytes.Equal(a.Value, r.Value) {
			t.Fatalf("read_committed record %d: %d %s after cleaning, %d %s before", i, a.Offset, a.Key, r.Offset, r.Key)
		}
	}
}

// TestLogCompactionKill9: the broker is killed -9 at random points while its cleaner (throttled, so a
// cleaning takes a while) compacts, round after round of overwrites: after each restart a consumer from
// the start sees every key's latest value, every record it sees is the one produced at that offset, no
// offset twice, offsets only going up (so the recovered segments and indexes serve the right bytes).
func TestLogCompactionKill9(t *testing.T) {
	b := startBroker(t, "--log-cleaner-backoff", "50ms", "--log-cleaner-io-max-bytes-per-second", "300000")
	ctx, cancel := context.WithTimeout(context.Background(), 240*time.Second)
	defer cancel()
	const topic = "compacted-kill"
	b.createTopic(topic, 1, compactedTopicConfigs("600000"))
	produced := map[int64][2]string{} // offset -> key, value
	latest := map[string]int64{}
	rng := rand.New(rand.NewPCG(18, 9))
	for round := range 8 {
		cl := b.client(kgo.ProducerBatchCompression(kgo.NoCompression()), kgo.RecordRetries(3))
		recs := make([]*kgo.Record, 0, 400)
		for i := range 400 {
			k := fmt.Sprintf("k%d", rng.IntN(60))
			recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(k), Value: []byte(fmt.Sprintf("%s-r%d-%d-%s", k, round, i, strings.Repeat("x", 80)))})
		}
		res := cl.ProduceSync(ctx, recs...)
		if err := res.FirstErr(); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		for _, r := range res {
			produced[r.Record.Offset] = [2]string{string(r.Record.Key), string(r.Record.Value)}
			latest[string(r.Record.Key)] = r.Record.Offset
		}
		cl.Close()
		time.Sleep(time.Duration(200+rng.IntN(800)) * time.Millisecond)
		b.kill9()
		b.start()
		seen := map[string]bool{}
		for _, r := range readCompacted(ctx, t, b, topic, 0) {
			want, ok := produced[r.Offset]
			if !ok || want[0] != string(r.Key) || want[1] != string(r.Value) {
				t.Fatalf("round %d: record at %d is %s=%.20q, produced %q=%.20q", round, r.Offset, r.Key, r.Value, want[0], want[1])
			}
			if r.Offset == latest[string(r.Key)] {
				seen[string(r.Key)] = true
			}
		}
		for k, o := range latest {
			if !seen[k] {
				t.Fatalf("round %d: latest value of %s (offset %d) lost", round, k, o)
			}
		}
	}
	// And the cleaner got somewhere: fewer records than produced.
	if got := len(readCompacted(ctx, t, b, topic, 0)); got >= len(produced) {
		t.Fatalf("%d records after cleaning, %d produced", got, len(produced))
	}
}

// TestLogCompactionCluster: three brokers, rf=3. Every replica compacts its own log; after the leader
// is killed -9 the new leader serves the compacted view (franz-go and kafka-go rebuild the same map),
// and the killed broker catches up after its restart.
func TestLogCompactionCluster(t *testing.T) {
	c := startCluster(t, 3, "--log-cleaner-backoff", "200ms")
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
	defer cancel()
	const topic = "compacted-rf3"
	c.createTopic(topic, 1, 3, compactedTopicConfigs("600000"))
	ct := produceHistory(ctx, t, c.client(kgo.ProducerBatchCompression(kgo.NoCompression())), topic, 15, 30, 120, "filler")
	leader := c.leaderOf(topic, 0)
	var alive *testBroker
	for id := int32(1); id <= 3; id++ {
		if id != leader {
			alive = c.node(id)
		}
	}
	waitCompacted(ctx, t, alive, ct, false)

	c.node(leader).kill9()
	c.waitFor(60*time.Second, "a new leader", func() error {
		parts, err := c.partitions(topic)
		if err != nil {
			return err
		}
		if l := parts[0].Leader; l <= 0 || l == leader {
			return fmt.Errorf("leader %d", l)
		}
		return nil
	})
	recs := waitCompacted(ctx, t, alive, ct, false)
	kgMap := kafkaGoMap(ctx, t, alive, topic)
	live := 0
	for _, r := range recs {
		if r.Value != nil {
			live++
			if v := kgMap[string(r.Key)]; !bytes.Equal(v, r.Value) {
				t.Fatalf("kafka-go after failover: key %s = %q, want %q", r.Key, v, r.Value)
			}
		}
	}
	if len(kgMap) != live {
		t.Fatalf("kafka-go rebuilt %d keys after failover, want %d", len(kgMap), live)
	}
	// The killed broker comes back; leadership returns to the preferred replica (every 2 s here),
	// which serves its own compacted log.
	c.node(leader).start()
	c.waitBalanced(topic)
	waitCompacted(ctx, t, c.node(leader), ct, false)
}

// TestMeasureOffsetsReplay measures what compacting __consumer_offsets saves a coordinator that loads
// it: one group commits the offsets of 100 partitions 300 times (30,000 records, one key per
// partition), with __consumer_offsets on 256 KiB segments; then the broker restarts and the time until
// OffsetFetch answers (the coordinator replayed the topic) is taken, with the cleaner on and off. It
// prints the partitions' bytes (DescribeLogDirs) too. A measurement, not a test: SLUICE_MEASURE=1.
func TestMeasureOffsetsReplay(t *testing.T) {
	if os.Getenv("SLUICE_MEASURE") == "" {
		t.Skip("a measurement: SLUICE_MEASURE=1 runs it")
	}
	threads := []string{"1", "0", "1", "0"}
	if s := os.Getenv("SLUICE_MEASURE_THREADS"); s != "" {
		threads = strings.Split(s, ",")
	}
	for _, threads := range threads {
		b := startBroker(t, "--log-cleaner-threads", threads, "--log-cleaner-backoff", "200ms")
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Second)
		adm := b.admin()
		const group = "replayed"
		b.createTopic("replay-src", 100, nil)
		offs := kadm.Offsets{}
		offs.Add(kadm.Offset{Topic: "replay-src", Partition: 0, At: 0, LeaderEpoch: -1})
		if _, err := adm.CommitOffsets(ctx, group, offs); err != nil { // creates __consumer_offsets
			t.Fatal(err)
		}
		if rs, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Name: "segment.bytes", Value: strPtr("262144")},
			{Name: "min.cleanable.dirty.ratio", Value: strPtr("0.1")}}, "__consumer_offsets"); err != nil || rs[0].Err != nil {
			t.Fatalf("alter __consumer_offsets: %v %v", err, rs)
		}
		for round := range 300 {
			offs := kadm.Offsets{}
			for p := range int32(100) {
				offs.Add(kadm.Offset{Topic: "replay-src", Partition: p, At: int64(round), LeaderEpoch: -1})
			}
			if resp, err := adm.CommitOffsets(ctx, group, offs); err != nil || resp.Error() != nil {
				t.Fatalf("commit: %v %v", err, resp.Error())
			}
		}
		time.Sleep(5 * time.Second) // the cleaner's turn
		size := int64(0)
		dirs, err := adm.DescribeAllLogDirs(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		dirs.Each(func(d kadm.DescribedLogDir) {
			d.Topics.Each(func(p kadm.DescribedLogDirPartition) {
				if p.Topic == "__consumer_offsets" {
					size += p.Size
				}
			})
		})
		b.stop()
		start := time.Now()
		b.start()
		adm = b.admin()
		for {
			resp, err := adm.FetchOffsets(ctx, group)
			if err == nil && resp.Error() == nil {
				if o, ok := resp.Lookup("replay-src", 99); ok && o.At == 299 {
					break
				}
			}
			if ctx.Err() != nil {
				t.Fatalf("offsets never loaded: %v", err)
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Logf("cleaner threads %s: __consumer_offsets %d bytes; restart to offsets served %v", threads, size, time.Since(start).Round(time.Millisecond))
		b.stop()
		cancel()
	}
}
