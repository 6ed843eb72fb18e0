package main

import (
	"context"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/sluicebroker/sluice/loadgen"
)

// nativeWorkload is a small loadgen workload on loadgen's native client against b.
func nativeWorkload(b *testBroker, name string) loadgen.Workload {
	w := loadgen.Defaults()
	w.Name = name
	w.Client = "native"
	w.Brokers = []string{b.Addr}
	w.Partitions = 2
	w.Producers = 2
	w.Warmup = loadgen.Duration(500 * time.Millisecond)
	w.Duration = loadgen.Duration(2 * time.Second)
	return w
}

// stampCheck follows what a reader of loadgen's records must see: each producer's sequence rising
// within a partition, no record twice.
type stampCheck struct {
	last  map[[2]int64]int64 // (partition, producer) -> last sequence
	count int
}

func (c *stampCheck) add(t *testing.T, partition int32, value []byte, ts time.Time) {
	t.Helper()
	intended, prod, seq, ok := loadgen.ReadStamp(value)
	if !ok || intended <= 0 {
		t.Fatalf("partition %d: record without a loadgen stamp: %x", partition, value)
	}
	if ts.Before(time.Now().Add(-time.Hour)) || ts.After(time.Now().Add(time.Minute)) {
		t.Fatalf("partition %d: record timestamp %v", partition, ts)
	}
	k := [2]int64{int64(partition), int64(prod)}
	if last, seen := c.last[k]; seen && int64(seq) <= last {
		t.Fatalf("partition %d producer %d: sequence %d after %d (duplicate or reordered)", partition, prod, seq, last)
	}
	c.last[k] = int64(seq)
	c.count++
}

// The native client's batches (every codec) are what franz-go (which checks CRCs) and sarama
// read back: every acknowledged record once, stamps and sequences intact, real timestamps.
func TestLoadgenNativeBatchesReadByFranzAndSarama(t *testing.T) {
	b := startBroker(t)
	for _, codec := range []string{"none", "gzip", "snappy", "lz4", "zstd"} {
		t.Run(codec, func(t *testing.T) {
			w := nativeWorkload(b, "native-"+codec)
			w.Topic = "native-" + codec
			w.KeepTopics = true
			w.Compression = codec
			w.Rate = 1000
			w.Keys = loadgen.KeyDist{Kind: "roundrobin", Count: 5}
			w.RecordSize = loadgen.SizeDist{Kind: "uniform", Min: 30, Max: 400}
			w.Consumers = 0
			res, err := loadgen.Run(context.Background(), w, loadgen.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.ProduceErrors) != 0 || res.Produce.Records == 0 {
				t.Fatalf("produced %d, errors %v", res.Produce.Records, res.ProduceErrors)
			}
			franz := stampCheck{last: map[[2]int64]int64{}}
			for _, r := range consumeAll(t, b, w.Topic) {
				franz.add(t, r.Partition, r.Value, r.Timestamp)
			}
			if int64(franz.count) != res.Produce.Records {
				t.Errorf("franz-go read %d records, %d acknowledged", franz.count, res.Produce.Records)
			}

			cfg := sarama.NewConfig()
			cfg.Version = sarama.V3_6_0_0
			cons, err := sarama.NewConsumer([]string{b.Addr}, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer cons.Close()
			sar := stampCheck{last: map[[2]int64]int64{}}
			for p := range w.Partitions {
				pc, err := cons.ConsumePartition(w.Topic, p, sarama.OffsetOldest)
				if err != nil {
					t.Fatal(err)
				}
				end := pc.HighWaterMarkOffset()
				for end > 0 {
					select {
					case m := <-pc.Messages():
						sar.add(t, p, m.Value, m.Timestamp)
						if m.Offset+1 >= end {
							end = 0
						}
					case err := <-pc.Errors():
						t.Fatal(err)
					case <-time.After(30 * time.Second):
						t.Fatalf("sarama: partition %d stuck", p)
					}
				}
				pc.Close()
			}
			if int64(sar.count) != res.Produce.Records {
				t.Errorf("sarama read %d records, %d acknowledged", sar.count, res.Produce.Records)
			}
		})
	}
}

// An idempotent native producer rides out a broker restart (kill -9): its batches in flight are
// retried with their sequences, so the consumers see every record once, in order.
func TestLoadgenNativeIdempotentSurvivesRestart(t *testing.T) {
	b := startBroker(t)
	w := nativeWorkload(b, "native-restart")
	w.Rate = 2000
	w.Duration = loadgen.Duration(6 * time.Second)
	w.DrainTimeout = loadgen.Duration(60 * time.Second)
	w.ConsumerGroups, w.Consumers = 0, 1
	restarted := make(chan struct{})
	go func() {
		defer close(restarted)
		time.Sleep(2500 * time.Millisecond)
		b.kill9()
		b.start()
	}()
	res, err := loadgen.Run(context.Background(), w, loadgen.Options{})
	<-restarted
	if err != nil {
		t.Fatal(err)
	}
	if res.Check.OutOfOrder != 0 || res.Check.OffsetGaps != 0 || !res.Check.Complete {
		t.Errorf("after a restart the consumers saw %+v (lag %d)", res.Check, res.ConsumerLag)
	}
	if len(res.ProduceErrors) != 0 {
		t.Errorf("produce errors: %v", res.ProduceErrors)
	}
	// Open loop: the schedule holds 2000 rec/s for 6.5 s, all sent and acknowledged across the restart.
	if got := res.Produce.Records + res.Schedule.Unsent; got != 13000 {
		t.Errorf("produced %d and left %d unsent, schedule holds 13000", res.Produce.Records, res.Schedule.Unsent)
	}
	t.Logf("%d records across the restart; consumer errors while it was down: %v", res.Produce.Records, res.ConsumeErrors)
}

// On a three-broker cluster the native producer follows a partition's leadership when its leader is
// killed: NOT_LEADER answers and the broken connection send its batches back through a metadata
// refresh to the new leader, with their sequences; the consumers see every record once, in order.
func TestLoadgenNativeFollowsLeaderAcrossFailover(t *testing.T) {
	c := startCluster(t, 3)
	const topic = "native-failover"
	minISR := "2"
	c.createTopic(topic, 2, 3, map[string]*string{"min.insync.replicas": &minISR})
	c.waitBalanced(topic)
	w := loadgen.Defaults()
	w.Name = "native-failover"
	w.Client = "native"
	for _, b := range c.brokers {
		w.Brokers = append(w.Brokers, b.Addr)
	}
	w.Topic, w.KeepTopics = topic, true
	w.Partitions, w.ReplicationFactor = 2, 3
	w.Rate = 1000
	w.ConsumerGroups, w.Consumers = 0, 1
	w.Warmup = loadgen.Duration(500 * time.Millisecond)
	w.Duration = loadgen.Duration(7 * time.Second)
	w.DrainTimeout = loadgen.Duration(60 * time.Second)
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(2 * time.Second)
		leader := c.leaderOf(topic, 0)
		t.Logf("killing broker %d, leader of partition 0", leader)
		c.node(leader).kill9()
		time.Sleep(2 * time.Second)
		c.node(leader).start()
	}()
	res, err := loadgen.Run(context.Background(), w, loadgen.Options{})
	<-done
	if err != nil {
		t.Fatal(err)
	}
	if len(res.ProduceErrors) != 0 {
		t.Errorf("produce errors: %v", res.ProduceErrors)
	}
	if res.Check.OutOfOrder != 0 || res.Check.OffsetGaps != 0 || !res.Check.Complete {
		t.Errorf("across the failover the consumers saw %+v (lag %d)", res.Check, res.ConsumerLag)
	}
	if got := res.Produce.Records + res.Schedule.Unsent; got != 7500 {
		t.Errorf("produced %d and left %d unsent, schedule holds 7500", res.Produce.Records, res.Schedule.Unsent)
	}
	t.Logf("%d records across the failover; consumer errors meanwhile: %v", res.Produce.Records, res.ConsumeErrors)
}
