package loadgen

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"
)

// startAgent serves an agent on a loopback port until the returned stop is called (or the test ends).
func startAgent(t *testing.T) (addr string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = ServeAgent(ctx, ln)
	}()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	return ln.Addr().String(), stop
}

// Three agents on loopback split the producers and consumers; the coordinator's merged result
// holds every record once, the schedule's exact count, and histograms merged from the agents'.
func TestRunAgentsThreeOnLoopback(t *testing.T) {
	var agents []string
	for range 3 {
		a, _ := startAgent(t)
		agents = append(agents, a)
	}
	w := Defaults()
	w.Name = "agents"
	w.Brokers = startKfake(t)
	w.Partitions = 3
	w.Producers = 3
	w.Rate = 1500
	w.RecordSize = SizeDist{Kind: "fixed", Mean: 100}
	w.ConsumerGroups, w.Consumers = 0, 3
	w.Warmup = Duration(500 * time.Millisecond)
	w.Duration = Duration(2 * time.Second)
	var progress strings.Builder
	res, err := RunAgents(context.Background(), w, agents, Options{Progress: &progress})
	if err != nil {
		t.Fatal(err)
	}
	checkSane(t, res)
	if got := res.Produce.Records + res.Schedule.Unsent; got != 1500*5/2 {
		t.Errorf("produced %d + unsent %d, the schedule holds %d", res.Produce.Records, res.Schedule.Unsent, 1500*5/2)
	}
	// Merged histograms: the measured records of all three agents, each once.
	if want := int64(1500 * 2); res.Publish.Count != want || res.EndToEnd.Count != want {
		t.Errorf("merged publish %d e2e %d values, want %d each", res.Publish.Count, res.EndToEnd.Count, want)
	}
	if res.Schedule.TargetRate != w.Rate {
		t.Errorf("merged target rate %v, want the workload's %v", res.Schedule.TargetRate, w.Rate)
	}
	if len(res.Agents) != 3 || res.Schedule.ProducerThreads != 3 || res.Schedule.ConsumerThreads != 3 {
		t.Errorf("agents %+v, producers %d consumers %d", res.Agents, res.Schedule.ProducerThreads, res.Schedule.ConsumerThreads)
	}
	if !strings.Contains(strings.Join(res.Warnings, "\n"), "clock skew") {
		t.Errorf("no clock-skew note for producers and consumers on different agents: %q", res.Warnings)
	}
	if !strings.Contains(progress.String(), "3 agents  produce") {
		t.Errorf("no aggregate progress line:\n%s", progress.String())
	}
	if len(res.Timeline) == 0 || res.Timeline[len(res.Timeline)-1].Produced != res.Produce.Records {
		t.Errorf("merged timeline does not end at the produced count: %+v", res.Timeline)
	}
	dir := t.TempDir()
	if err := res.Write(dir); err != nil {
		t.Fatal(err)
	}
}

// An unreachable agent fails the run before it starts; one that dies mid-run fails it promptly,
// naming what was lost.
func TestRunAgentsLost(t *testing.T) {
	w := Defaults()
	w.Brokers = startKfake(t)
	w.Partitions, w.Producers, w.Rate = 2, 2, 500
	w.ConsumerGroups, w.Consumers = 0, 2
	w.Warmup, w.Duration = Duration(0), Duration(20*time.Second)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	a, _ := startAgent(t)
	if _, err := RunAgents(context.Background(), w, []string{a, dead}, Options{}); err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("unreachable agent: %v", err)
	}

	b, stopB := startAgent(t)
	go func() {
		time.Sleep(4 * time.Second)
		stopB()
	}()
	start := time.Now()
	_, err = RunAgents(context.Background(), w, []string{a, b}, Options{})
	if err == nil || !strings.Contains(err.Error(), "lost mid-run") || !strings.Contains(err.Error(), b) {
		t.Fatalf("agent dying mid-run: %v", err)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("a lost agent took %v to fail the run", d)
	}
}
