package main

import (
	"context"
	"errors"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicebroker/sluice/internal/testcluster"
)

// TestMeasureFetchSessions measures what fetch sessions save (results/2026-12-04-fetch-sessions.md):
// one broker, a topic of SLUICE_MEASURE_PARTITIONS partitions (default 1,000), a producer writing 100
// records/s round-robin (one record per request), and a franz-go consumer from the end for 20 s with
// fetch sessions off, then on. It reports fetches, request and response bytes per fetch (the client's
// broker hooks) and the broker's CPU (its process_cpu_seconds_total). A measurement, not a test: it
// runs only with SLUICE_MEASURE=1.
func TestMeasureFetchSessions(t *testing.T) {
	if os.Getenv("SLUICE_MEASURE") == "" {
		t.Skip("a measurement: SLUICE_MEASURE=1 runs it")
	}
	partitions := 1000
	if s := os.Getenv("SLUICE_MEASURE_PARTITIONS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatal(err)
		}
		partitions = n
	}
	const window = 20 * time.Second
	maddr := freePort(t)
	b := startBroker(t, "--raft-log", "segment", "--metrics-addr", maddr)
	const topic = "measure"
	// A thousand partitions take longer than a request timeout to create: a retried creation
	// finds the topic there; then wait for every partition's leader.
	cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer ccancel()
	resp, err := b.admin().CreateTopic(cctx, int32(partitions), 1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		t.Fatalf("create %s: %v", topic, err)
	}
	for {
		actx, acancel := context.WithTimeout(cctx, 10*time.Second)
		err := testcluster.AllPartitionsLed(actx, b.admin())
		acancel()
		if err == nil {
			break
		}
		if cctx.Err() != nil {
			t.Fatalf("partitions not led: %v", err)
		}
		time.Sleep(time.Second)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	prod := b.client(kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(0))
	var pwg sync.WaitGroup
	pwg.Add(1)
	go func() {
		defer pwg.Done()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			prod.Produce(ctx, &kgo.Record{Topic: topic, Partition: int32(i % partitions), Value: []byte("measure")}, nil)
		}
	}()
	defer pwg.Wait()
	defer cancel()

	cpu := func() float64 {
		v, ok := metricValue(scrape(t, "http://"+maddr), "process_cpu_seconds_total", nil)
		if !ok {
			t.Fatal("no process_cpu_seconds_total")
		}
		return v
	}
	for _, sessions := range []bool{false, true} {
		var mu sync.Mutex
		var fetches, reqBytes, respBytes, records int
		hooks := fetchBytesHooks{write: func(n int) { mu.Lock(); fetches++; reqBytes += n; mu.Unlock() },
			read: func(n int) { mu.Lock(); respBytes += n; mu.Unlock() }}
		opts := []kgo.Opt{kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtEnd()), kgo.WithHooks(hooks)}
		if !sessions {
			opts = append(opts, kgo.DisableFetchSessions())
		}
		cons, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(b.Addr)}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		// Warm up: the first fetches list offsets and open the session.
		warm, stopWarm := context.WithTimeout(ctx, 3*time.Second)
		for warm.Err() == nil {
			cons.PollFetches(warm)
		}
		stopWarm()
		mu.Lock()
		fetches, reqBytes, respBytes = 0, 0, 0
		mu.Unlock()
		cpu0, start := cpu(), time.Now()
		run, stop := context.WithTimeout(ctx, window)
		for run.Err() == nil {
			records += cons.PollFetches(run).NumRecords()
		}
		stop()
		cpuUsed := (cpu() - cpu0) / time.Since(start).Seconds() * 100
		cons.Close()
		mu.Lock()
		t.Logf("partitions %d, sessions %v: %d fetches, %d records, request %d B/fetch, response %d B/fetch, broker CPU %.1f%% of a core",
			partitions, sessions, fetches, records, reqBytes/max(fetches, 1), respBytes/max(fetches, 1), cpuUsed)
		mu.Unlock()
	}
}

// fetchBytesHooks counts the bytes of each Fetch request written and response read.
type fetchBytesHooks struct{ write, read func(int) }

func (h fetchBytesHooks) OnBrokerWrite(_ kgo.BrokerMetadata, key int16, bytes int, _, _ time.Duration, err error) {
	if key == kmsg.Fetch.Int16() && err == nil {
		h.write(bytes)
	}
}

func (h fetchBytesHooks) OnBrokerRead(_ kgo.BrokerMetadata, key int16, bytes int, _, _ time.Duration, err error) {
	if key == kmsg.Fetch.Int16() && err == nil {
		h.read(bytes)
	}
}
