package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Distributed runs: `loadgen agent -listen ADDR` on each load machine, and `loadgen run -agents
// a:port,b:port` on any machine. The coordinator creates the topics, gives each agent a share of
// the producers and consumers and one common start time, polls their counters every second (the
// aggregate progress line, and a lost agent fails the run at once), tells them to finish once the
// consumers caught up, and merges their HdrHistogram logs interval by interval: the result holds
// merged histograms, never averaged percentiles.

// AgentInfo is one agent of a distributed run.
type AgentInfo struct {
	Addr    string  `json:"addr"`
	Share   Share   `json:"share"`
	Machine Machine `json:"machine"`
}

// AgentJob is what the coordinator asks an agent to run.
type AgentJob struct {
	Workload    Workload  `json:"workload"`
	Share       Share     `json:"share"`
	StartAt     time.Time `json:"start_at"`
	GroupPrefix string    `json:"group_prefix"`
	Label       string    `json:"label"`
}

// AgentReply is an agent's result with its logs.
type AgentReply struct {
	Result     *Result `json:"result,omitempty"`
	PublishLog []byte  `json:"publish_log,omitempty"`
	E2ELog     []byte  `json:"e2e_log,omitempty"`
	ProbeLog   []byte  `json:"probe_log,omitempty"`
	Error      string  `json:"error,omitempty"`
}

// Agent serves one job at a time over HTTP: POST /run, GET /progress, POST /finish,
// POST /cancel, GET /result (blocks until the run ends).
type Agent struct {
	mu      sync.Mutex
	running bool
	cancel  context.CancelFunc
	finish  chan struct{}
	last    Sample
	done    chan struct{}
	reply   AgentReply
}

// ServeAgent serves on ln until ctx ends.
func ServeAgent(ctx context.Context, ln net.Listener) error {
	a := &Agent{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /run", a.handleRun)
	mux.HandleFunc("GET /progress", a.handleProgress)
	mux.HandleFunc("POST /finish", func(w http.ResponseWriter, _ *http.Request) {
		a.mu.Lock()
		if a.finish != nil {
			select {
			case <-a.finish:
			default:
				close(a.finish)
			}
		}
		a.mu.Unlock()
	})
	mux.HandleFunc("POST /cancel", func(w http.ResponseWriter, _ *http.Request) {
		a.mu.Lock()
		if a.cancel != nil {
			a.cancel()
		}
		a.mu.Unlock()
	})
	mux.HandleFunc("GET /result", a.handleResult)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	stop := context.AfterFunc(ctx, func() {
		a.mu.Lock()
		if a.cancel != nil {
			a.cancel()
		}
		a.mu.Unlock()
		_ = srv.Close()
	})
	defer stop()
	err := srv.Serve(ln)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func (a *Agent) handleRun(w http.ResponseWriter, r *http.Request) {
	var job AgentJob
	if err := json.NewDecoder(r.Body).Decode(&job); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.running {
		http.Error(w, "agent busy with another run", http.StatusConflict)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.running, a.cancel, a.finish, a.done = true, cancel, make(chan struct{}), make(chan struct{})
	a.last, a.reply = Sample{}, AgentReply{}
	done, finish := a.done, a.finish
	go func() {
		defer cancel()
		opt := Options{Label: job.Label, Share: &job.Share, StartAt: job.StartAt, GroupPrefix: job.GroupPrefix, Done: finish,
			OnSample: func(s Sample) {
				a.mu.Lock()
				a.last = s
				a.mu.Unlock()
			}}
		res, err := Run(ctx, job.Workload, opt)
		a.mu.Lock()
		if err != nil {
			a.reply = AgentReply{Error: err.Error()}
		} else {
			a.reply = AgentReply{Result: res, PublishLog: res.PublishLog, E2ELog: res.E2ELog, ProbeLog: res.ProbeLog}
		}
		a.running = false
		a.mu.Unlock()
		close(done)
	}()
	w.WriteHeader(http.StatusAccepted)
}

func (a *Agent) handleProgress(w http.ResponseWriter, _ *http.Request) {
	a.mu.Lock()
	s := a.last
	a.mu.Unlock()
	_ = json.NewEncoder(w).Encode(s)
}

func (a *Agent) handleResult(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	done := a.done
	a.mu.Unlock()
	if done == nil {
		http.Error(w, "no run", http.StatusNotFound)
		return
	}
	select {
	case <-done:
	case <-r.Context().Done():
		return
	}
	a.mu.Lock()
	reply := a.reply
	a.mu.Unlock()
	_ = json.NewEncoder(w).Encode(reply)
}

// splitShares gives n agents contiguous, nearly equal shares of the producers and consumers.
func splitShares(w *Workload, n int) []Share {
	out := make([]Share, n)
	for i := range out {
		out[i] = Share{
			ProducerLo: w.Producers * i / n, ProducerHi: w.Producers * (i + 1) / n,
			ConsumerLo: w.Consumers * i / n, ConsumerHi: w.Consumers * (i + 1) / n,
		}
	}
	return out
}

// agentClient talks to one agent.
type agentClient struct {
	addr string
	http *http.Client
}

func (c *agentClient) url(path string) string { return "http://" + c.addr + path }

func (c *agentClient) post(ctx context.Context, path string, body any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	return c.do(ctx, http.MethodPost, path, rd, nil)
}

func (c *agentClient) get(ctx context.Context, path string, out any) error {
	return c.do(ctx, http.MethodGet, path, nil, out)
}

// do sends one request to the agent and decodes its JSON answer into out (nil: none expected).
func (c *agentClient) do(ctx context.Context, method, path string, body io.Reader, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.url(path), body)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1000))
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(msg)))
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// RunAgents runs w split across agents (host:port each) and merges what they measured.
func RunAgents(ctx context.Context, w Workload, agents []string, opt Options) (*Result, error) {
	if err := w.Validate(); err != nil {
		return nil, err
	}
	if len(agents) == 0 {
		return nil, errors.New("no agents")
	}
	if w.Producers < len(agents) {
		return nil, fmt.Errorf("%d producers cannot be split across %d agents: give each at least one", w.Producers, len(agents))
	}
	label := opt.Label
	if label == "" {
		label = w.Name
	}
	clients := make([]*agentClient, len(agents))
	for i, a := range agents {
		clients[i] = &agentClient{addr: a, http: &http.Client{}}
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		var s Sample
		err := clients[i].get(pctx, "/progress", &s)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("agent %s unreachable: %w", a, err)
		}
	}

	// The coordinator owns the topics.
	created := w.Topic == ""
	if created {
		w.Topic = "loadgen-" + runID()
	}
	topics := w.TopicNames()
	admCl, err := kgo.NewClient(kgo.SeedBrokers(w.Brokers...))
	if err != nil {
		return nil, err
	}
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	broker := Broker{Bootstrap: w.Brokers}
	if err := describeBroker(ctx, adm, &broker); err != nil {
		return nil, fmt.Errorf("broker %s: %w", strings.Join(w.Brokers, ","), err)
	}
	if err := createTopics(ctx, adm, topics, w.Partitions, w.ReplicationFactor); err != nil {
		return nil, err
	}
	if created && !w.KeepTopics {
		defer func() {
			dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, _ = adm.DeleteTopics(dctx, topics...)
		}()
	}

	shares := splitShares(&w, len(agents))
	// Time for every agent to connect and its consumers to join their groups before the schedule starts.
	startAt := time.Now().Add(3 * time.Second)
	if w.ConsumerGroups > 0 && w.Client != "native" && w.Consumers > 0 {
		startAt = startAt.Add(5 * time.Second)
	}
	job := AgentJob{Workload: w, StartAt: startAt, GroupPrefix: "loadgen-" + runID(), Label: label}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	cancelAll := func() {
		for _, c := range clients {
			cctx, cc := context.WithTimeout(context.Background(), 2*time.Second)
			_ = c.post(cctx, "/cancel", nil)
			cc()
		}
	}
	for i, c := range clients {
		job.Share = shares[i]
		if err := c.post(runCtx, "/run", job); err != nil {
			cancelAll()
			return nil, fmt.Errorf("agent %s: start: %w", c.addr, err)
		}
	}

	// Results are gathered concurrently; progress is polled once a second.
	replies := make([]AgentReply, len(clients))
	errs := make([]error, len(clients))
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() { errs[i] = c.get(runCtx, "/result", &replies[i]) })
	}
	allDone := make(chan struct{})
	go func() { wg.Wait(); close(allDone) }()

	stop := startAt.Add(w.Warmup.D() + w.Duration.D())
	hardEnd := stop.Add(w.DrainTimeout.D())
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var last Sample
	lastAt := time.Now()
	finished := false
	groups := int64(0)
	if w.Consumers > 0 {
		groups = int64(max(w.ConsumerGroups, 1))
	}
	for running := true; running; {
		select {
		case <-allDone:
			running = false
			continue
		case <-ctx.Done():
			cancelAll()
			return nil, ctx.Err()
		case <-tick.C:
		}
		var sum Sample
		allFlushed := true
		for i, c := range clients {
			pctx, pc := context.WithTimeout(runCtx, 5*time.Second)
			var s Sample
			err := c.get(pctx, "/progress", &s)
			pc()
			if err != nil {
				cancel()
				cancelAll()
				sh := shares[i]
				return nil, fmt.Errorf("agent %s lost mid-run (%v): its producers %d..%d and consumers %d..%d of each group are missing from the run, which is abandoned",
					c.addr, err, sh.ProducerLo, sh.ProducerHi-1, sh.ConsumerLo, sh.ConsumerHi-1)
			}
			sum.Produced += s.Produced
			sum.ProducedBytes += s.ProducedBytes
			sum.Consumed += s.Consumed
			sum.ConsumedBytes += s.ConsumedBytes
			sum.Failed += s.Failed
			allFlushed = allFlushed && s.ProducersDone
		}
		sum.Lag = sum.Produced*groups - sum.Consumed
		now := time.Now()
		if opt.Progress != nil && now.After(startAt) {
			secs := now.Sub(lastAt).Seconds()
			fmt.Fprintf(opt.Progress, "%5.0fs  %d agents  produce %9.0f rec/s %8.2f MB/s  consume %9.0f rec/s %8.2f MB/s  failed %d  lag %d\n",
				now.Sub(startAt).Seconds(), len(clients), float64(sum.Produced-last.Produced)/secs, float64(sum.ProducedBytes-last.ProducedBytes)/secs/1e6,
				float64(sum.Consumed-last.Consumed)/secs, float64(sum.ConsumedBytes-last.ConsumedBytes)/secs/1e6, sum.Failed, max(sum.Lag, 0))
		}
		last, lastAt = sum, now
		if !finished && (allFlushed && now.After(stop) && sum.Lag <= 0 || now.After(hardEnd)) {
			finished = true
			for _, c := range clients {
				_ = c.post(runCtx, "/finish", nil)
			}
		}
	}
	for i, err := range errs {
		if err == nil && replies[i].Error != "" {
			err = errors.New(replies[i].Error)
		}
		if err != nil {
			sh := shares[i]
			return nil, fmt.Errorf("agent %s failed (producers %d..%d, consumers %d..%d of each group lost): %w", clients[i].addr, sh.ProducerLo, sh.ProducerHi-1, sh.ConsumerLo, sh.ConsumerHi-1, err)
		}
	}
	res, err := mergeReplies(w, label, broker, agents, replies, groups)
	if err != nil {
		return nil, err
	}
	for i, c := range clients {
		res.Agents = append(res.Agents, AgentInfo{Addr: c.addr, Share: shares[i], Machine: replies[i].Result.Machine})
	}
	// End-to-end latency compares the producing agent's clock with the consuming agent's.
	if w.Consumers > 0 && len(clients) > 1 {
		res.Warnings = append(res.Warnings, fmt.Sprintf("producers and consumers ran on different agents (%d): end-to-end latency includes the clock skew between their machines; publish latency is measured on the producing agent alone", len(clients)))
	}
	return res, nil
}

// mergeReplies adds up the agents' counts and merges their histograms interval by interval.
func mergeReplies(w Workload, label string, broker Broker, addrs []string, replies []AgentReply, groups int64) (*Result, error) {
	first := replies[0].Result
	res := &Result{Loadgen: Version, Label: label, Workload: w, Broker: broker, Machine: first.Machine, Start: first.Start,
		MeasuredSeconds: first.MeasuredSeconds, ProduceErrors: map[string]int64{}, ConsumeErrors: map[string]int64{}}
	res.Schedule = first.Schedule
	res.Schedule.ProducerThreads, res.Schedule.ConsumerThreads, res.Schedule.CPUSeconds = 0, 0, 0
	res.Schedule.MaxLagMs, res.Schedule.BlockedSeconds, res.Schedule.Unsent, res.Schedule.LagP99Ms = 0, 0, 0, 0
	res.Schedule.LoadgenLimited = false
	for i, rp := range replies {
		r := rp.Result
		res.Produce = addThroughput(res.Produce, r.Produce)
		res.Consume = addThroughput(res.Consume, r.Consume)
		for k, v := range r.ProduceErrors {
			res.ProduceErrors[k] += v
		}
		for k, v := range r.ConsumeErrors {
			res.ConsumeErrors[k] += v
		}
		res.Check.OutOfOrder += r.Check.OutOfOrder
		res.Check.OffsetGaps += r.Check.OffsetGaps
		res.Check.Stale += r.Check.Stale
		res.Check.Foreign += r.Check.Foreign
		s := r.Schedule
		res.Schedule.ProducerThreads += s.ProducerThreads
		res.Schedule.ConsumerThreads += s.ConsumerThreads
		res.Schedule.CPUSeconds += s.CPUSeconds
		res.Schedule.BlockedSeconds += s.BlockedSeconds
		res.Schedule.Unsent += s.Unsent
		res.Schedule.MaxLagMs = max(res.Schedule.MaxLagMs, s.MaxLagMs)
		res.Schedule.LagP99Ms = max(res.Schedule.LagP99Ms, s.LagP99Ms)
		res.Schedule.LoadgenLimited = res.Schedule.LoadgenLimited || s.LoadgenLimited
		for _, wn := range r.Warnings {
			if !strings.HasPrefix(wn, "consumers did not read every") { // judged again below, over all agents
				res.Warnings = append(res.Warnings, "agent "+addrs[i]+": "+wn)
			}
		}
		res.Timeline = addTimeline(res.Timeline, r.Timeline)
	}
	res.Schedule.TargetRate = w.Rate
	res.Schedule.TargetAchieved = w.Rate <= 0 || res.Produce.RecordsPerSec >= 0.95*w.Rate
	if !res.Schedule.TargetAchieved {
		res.Warnings = append(res.Warnings, fmt.Sprintf("target rate %.0f rec/s not reached: %.0f rec/s acknowledged over all agents", w.Rate, res.Produce.RecordsPerSec))
	}
	if groups > 0 {
		res.ConsumerLag = res.Produce.Records*groups - res.Consume.Records
		res.Check.Complete = res.ConsumerLag == 0
		if !res.Check.Complete {
			res.Warnings = append(res.Warnings, fmt.Sprintf("consumers did not read every acknowledged record within the drain timeout (lag %d)", res.ConsumerLag))
		}
	} else {
		res.Check.Complete = true
	}
	var err error
	var over int64
	if res.PublishLog, res.PublishHist, over, err = mergeLogs(res.Start, "publish", replies, func(r AgentReply) []byte { return r.PublishLog }); err != nil {
		return nil, err
	}
	for _, rp := range replies {
		over += rp.Result.Publish.Over
	}
	res.Publish = summarize(res.PublishHist, over)
	if groups > 0 {
		if res.E2ELog, res.E2EHist, _, err = mergeLogs(res.Start, "e2e", replies, func(r AgentReply) []byte { return r.E2ELog }); err != nil {
			return nil, err
		}
		over = 0
		for _, rp := range replies {
			over += rp.Result.EndToEnd.Over
		}
		res.EndToEnd = summarize(res.E2EHist, over)
	}
	if res.ProbeLog, _, _, err = mergeLogs(res.Start, "probe", replies, func(r AgentReply) []byte { return r.ProbeLog }); err != nil {
		return nil, err
	}
	return res, nil
}

func addThroughput(a, b Throughput) Throughput {
	return Throughput{Records: a.Records + b.Records, Bytes: a.Bytes + b.Bytes, RecordsPerSec: a.RecordsPerSec + b.RecordsPerSec, MBPerSec: a.MBPerSec + b.MBPerSec}
}

func addTimeline(a, b []Sample) []Sample {
	for i, s := range b {
		if i >= len(a) {
			a = append(a, Sample{At: s.At})
		}
		t := &a[i]
		t.Produced += s.Produced
		t.ProducedBytes += s.ProducedBytes
		t.Consumed += s.Consumed
		t.ConsumedBytes += s.ConsumedBytes
		t.Failed += s.Failed
		t.Lag += s.Lag
	}
	return a
}

// mergeLogs merges the agents' interval logs: interval i of the result is interval i of every
// agent (they tick once a second from the same start time), and the total is all of them.
func mergeLogs(start time.Time, tag string, replies []AgentReply, pick func(AgentReply) []byte) ([]byte, *hdrhistogram.Histogram, int64, error) {
	var per [][]*hdrhistogram.Histogram
	for _, rp := range replies {
		b := pick(rp)
		if len(b) == 0 {
			continue
		}
		lr := hdrhistogram.NewHistogramLogReader(bytes.NewReader(b))
		var ivs []*hdrhistogram.Histogram
		for {
			h, err := lr.NextIntervalHistogram()
			if err != nil {
				return nil, nil, 0, fmt.Errorf("%s log of %s: %w", tag, rp.Result.Machine.Hostname, err)
			}
			if h == nil {
				break
			}
			ivs = append(ivs, h)
		}
		per = append(per, ivs)
	}
	total := NewHistogram()
	log := newHlog(start, tag)
	for i := 0; ; i++ {
		m := NewHistogram()
		found := false
		for _, ivs := range per {
			if i < len(ivs) {
				if !found {
					m.SetStartTimeMs(ivs[i].StartTimeMs())
					m.SetEndTimeMs(ivs[i].EndTimeMs())
				}
				found = true
				m.Merge(ivs[i])
			}
		}
		if !found {
			break
		}
		log.add(m)
		total.Merge(m)
	}
	return log.bytes(), total, 0, nil
}
