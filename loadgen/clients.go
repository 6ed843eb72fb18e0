package loadgen

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// The kgo settings a workload implies, and the admin calls a run makes.

func producerOpts(w *Workload, topic string) []kgo.Opt {
	opts := append(securityOpts(w),
		kgo.SeedBrokers(w.Brokers...),
		kgo.DefaultProduceTopic(topic),
		kgo.ProducerLinger(w.Linger.D()),
		kgo.ProducerBatchMaxBytes(w.BatchMaxBytes),
		kgo.MaxBufferedRecords(w.MaxBufferedRecords+1),
		kgo.ProducerBatchCompression(codec(w.Compression)),
	)
	switch w.Acks {
	case "0":
		opts = append(opts, kgo.RequiredAcks(kgo.NoAck()))
	case "1":
		opts = append(opts, kgo.RequiredAcks(kgo.LeaderAck()))
	default:
		opts = append(opts, kgo.RequiredAcks(kgo.AllISRAcks()))
	}
	if !w.Idempotent {
		// With idempotence kgo fixes in-flight requests at 5 (Kafka's limit for ordering).
		opts = append(opts, kgo.DisableIdempotentWrite(), kgo.MaxProduceRequestsInflightPerBroker(w.MaxInFlight))
	}
	if w.BatchMaxBytes > 1<<20 {
		opts = append(opts, kgo.BrokerMaxWriteBytes(2*w.BatchMaxBytes+(1<<20)))
	}
	return opts
}

func codec(name string) kgo.CompressionCodec {
	switch name {
	case "gzip":
		return kgo.GzipCompression()
	case "snappy":
		return kgo.SnappyCompression()
	case "lz4":
		return kgo.Lz4Compression()
	case "zstd":
		return kgo.ZstdCompression()
	}
	return kgo.NoCompression()
}

// describeBroker asks for the API versions of the first broker that answers.
func describeBroker(ctx context.Context, adm *kadm.Client, b *Broker) error {
	vctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	vs, err := adm.ApiVersions(vctx)
	if err != nil {
		return err
	}
	var lastErr error
	for _, v := range vs.Sorted() {
		if v.Err != nil {
			lastErr = v.Err
			continue
		}
		b.VersionHint = v.VersionGuess()
		for _, k := range v.Raw().ApiKeys {
			name := kmsg.NameForKey(k.ApiKey)
			if name == "" {
				name = fmt.Sprintf("Key%d", k.ApiKey)
			}
			b.APIVersions = append(b.APIVersions, fmt.Sprintf("%s %d-%d", name, k.MinVersion, k.MaxVersion))
		}
		return nil
	}
	if lastErr == nil {
		lastErr = errors.New("no broker answered ApiVersions")
	}
	return lastErr
}

// createTopics creates the topics that do not exist yet.
func createTopics(ctx context.Context, adm *kadm.Client, topics []string, partitions int32, rf int16) error {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := adm.CreateTopics(cctx, partitions, rf, nil, topics...)
	if err != nil {
		return fmt.Errorf("create topics: %w", err)
	}
	for _, t := range resp.Sorted() {
		if t.Err != nil && !errors.Is(t.Err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("create topic %s: %w", t.Topic, t.Err)
		}
	}
	return nil
}

func consumerOpts(w *Workload) []kgo.Opt {
	return append(securityOpts(w),
		kgo.SeedBrokers(w.Brokers...),
		kgo.FetchMaxWait(500*time.Millisecond),
		kgo.FetchMaxPartitionBytes(w.FetchMaxPartitionBytes),
		kgo.FetchMaxBytes(max(50<<20, w.FetchMaxPartitionBytes)),
	)
}

// groupOpts make a consumer a member of group, reading from the start of fresh partitions and
// counting its assigned partitions into g.
func groupOpts(topics []string, group string, g *groupCheck) []kgo.Opt {
	count := func(sign int64) func(context.Context, *kgo.Client, map[string][]int32) {
		return func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			var n int64
			for _, ps := range m {
				n += int64(len(ps))
			}
			g.assigned.Add(sign * n)
		}
	}
	return []kgo.Opt{
		kgo.ConsumeTopics(topics...),
		kgo.ConsumerGroup(group),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.OnPartitionsAssigned(count(1)),
		// kgo commits on revoke only in its default callback; one of our own must commit itself, or
		// the partitions' next owner re-reads from the last autocommit and the check counts duplicates.
		kgo.OnPartitionsRevoked(func(ctx context.Context, cl *kgo.Client, m map[string][]int32) {
			_ = cl.CommitUncommittedOffsets(ctx) // best effort, as kgo's default: a failure means re-reads
			count(-1)(ctx, cl, m)
		}),
		kgo.OnPartitionsLost(count(-1)),
	}
}

// directAssignment gives consumer ci of n every partition whose index is ci modulo n.
func directAssignment(topics []string, partitions int32, n, ci int) map[string]map[int32]kgo.Offset {
	assign := map[string]map[int32]kgo.Offset{}
	for ti, t := range topics {
		for p := range partitions {
			if (ti*int(partitions)+int(p))%n != ci {
				continue
			}
			if assign[t] == nil {
				assign[t] = map[int32]kgo.Offset{}
			}
			assign[t][p] = kgo.NewOffset().AtStart()
		}
	}
	return assign
}
