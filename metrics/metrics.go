// Package metrics holds the broker's Prometheus metrics: the registry served at /metrics, the
// counters and histograms the request paths update (once per request or per batch, never per
// record), and the HTTP handler with /healthz and /readyz. Gauges that describe state (partitions,
// leaders, under-replicated partitions, consumer lag) are computed at scrape time by collectors the
// packages that own the state register (broker/metrics.go). It imports nothing of Sluice, so every
// package may update it.
package metrics

import (
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Registry is what /metrics serves: Sluice's metrics, the Go runtime's and the process's.
var Registry = prometheus.NewRegistry()

// latencyBuckets span 100 µs to ~26 s: a produce acknowledged from the page cache to a long poll.
var latencyBuckets = prometheus.ExponentialBuckets(0.0001, 2, 19)

var (
	requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_requests_total", Help: "Kafka requests answered, by API.",
	}, []string{"api"})
	requestSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "sluice_request_duration_seconds", Help: "Time from a request's arrival to its response being queued, by API (fetch includes its long poll).",
		Buckets: latencyBuckets,
	}, []string{"api"})
	networkBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_network_bytes_total", Help: "Kafka protocol bytes read (in: request frames) and written (out: responses, file ranges included).",
	}, []string{"direction"})
	topicBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_topic_bytes_total", Help: "Record batch bytes produced (in, acknowledged) and fetched (out), by topic.",
	}, []string{"topic", "direction"})
	topicRecords = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_topic_records_total", Help: "Records produced (in, acknowledged; from the batch headers) and fetched (out; offsets spanned by the batches sent), by topic.",
	}, []string{"topic", "direction"})
	partitionErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_partition_errors_total", Help: "Per-partition errors answered to Produce and Fetch, by API and Kafka error.",
	}, []string{"api", "error"})

	// RaftCommitSeconds is the time from proposing a produced batch to its Raft commit and apply.
	RaftCommitSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "sluice_raft_commit_duration_seconds", Help: "Time from proposing a produced batch to Raft to its commit and apply on the leader.",
		Buckets: latencyBuckets,
	})
	// FsyncSeconds is the duration of each fdatasync of a segment file made outside a Raft save
	// (snapshots, closing, the cleaner); a save's own are in SaveSyncSeconds.
	FsyncSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "sluice_fsync_duration_seconds", Help: "Duration of each fdatasync of a segment file outside a Raft save (snapshots, segment close, the cleaner).",
		Buckets: prometheus.ExponentialBuckets(0.00005, 2, 18),
	})
	// SaveSyncSeconds is, per Raft save, the wait for the fdatasyncs of every file it wrote (issued
	// together): what an acknowledgement waits for on the disk.
	SaveSyncSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "sluice_raft_save_sync_duration_seconds", Help: "Per Raft log save, the time to fdatasync every file it wrote (segments and metadata, issued together): the disk's part of a produce acknowledgement.",
		Buckets: prometheus.ExponentialBuckets(0.00005, 2, 18),
	})
	// SnapshotSyncSeconds is the duration of each partition state machine Sync (the log's data,
	// indexes and checkpoint made durable): the part of a Raft snapshot that holds the partition's
	// apply, so its acknowledgements.
	SnapshotSyncSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "sluice_snapshot_sync_duration_seconds", Help: "Duration of each partition state machine Sync (log, indexes and checkpoint made durable for a Raft snapshot), during which the partition applies nothing.",
		Buckets: prometheus.ExponentialBuckets(0.00005, 2, 18),
	})
	// CleanerBytes counts the log cleaner's bytes: read (both passes) and written (cleaned segments).
	CleanerBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_log_cleaner_bytes_total", Help: "Bytes the log cleaner read (both passes) and wrote (cleaned segments) compacting cleanup.policy=compact topics.",
	}, []string{"direction"})
	// CleanerRuns counts cleanings of one partition's log, by result (ok, error).
	CleanerRuns = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_log_cleaner_runs_total", Help: "Cleanings of a partition's log by the log cleaner, by result.",
	}, []string{"result"})
)

func init() {
	Registry.MustRegister(requests, requestSeconds, networkBytes, topicBytes, topicRecords, partitionErrors,
		RaftCommitSeconds, FsyncSeconds, SaveSyncSeconds, SnapshotSyncSeconds, CleanerBytes, CleanerRuns,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for key := int16(0); key <= kmsg.MaxKey; key++ {
		name := kmsg.NameForKey(key)
		if name == "" {
			continue
		}
		apiMetrics[key] = &apiMetric{requests: requests.WithLabelValues(name), seconds: requestSeconds.WithLabelValues(name)}
	}
	bytesIn, bytesOut = networkBytes.WithLabelValues("in"), networkBytes.WithLabelValues("out")
}

// apiMetric is one API's children, resolved once so a request costs no label lookup.
type apiMetric struct {
	requests prometheus.Counter
	seconds  prometheus.Observer
}

var (
	apiMetrics        [kmsg.MaxKey + 1]*apiMetric
	bytesIn, bytesOut prometheus.Counter
)

// Mono is a monotonic clock reading: nanoseconds since the process started. Reading it costs one
// clock read, half of time.Now's two (wall and monotonic), which shows per request on a VM whose
// clock reads take a few hundred nanoseconds.
type Mono int64

var processStart = time.Now()

// Now reads the monotonic clock.
func Now() Mono { return Mono(time.Since(processStart)) }

// Seconds is the time since m, in seconds.
func (m Mono) Seconds() float64 { return float64(Now()-m) / 1e9 }

// Request counts one answered request of an API key and the time since it arrived.
func Request(key int16, arrived Mono) {
	if key < 0 || int(key) >= len(apiMetrics) || apiMetrics[key] == nil {
		return
	}
	m := apiMetrics[key]
	m.requests.Inc()
	d := Now() - arrived
	m.seconds.Observe(float64(d) / 1e9)
	if h := slowHook.Load(); h != nil && time.Duration(d) >= h.threshold {
		h.fn(key, time.Duration(d))
	}
}

type slowRequestHook struct {
	threshold time.Duration
	fn        func(key int16, d time.Duration)
}

var slowHook atomic.Pointer[slowRequestHook]

// OnSlowRequest has fn called (on the answering goroutine: it must not block) for every request
// that took threshold or longer; nil fn removes the hook. For diagnostics (serve's
// --debug-stall-trace), not for serving.
func OnSlowRequest(threshold time.Duration, fn func(key int16, d time.Duration)) {
	if fn == nil {
		slowHook.Store(nil)
		return
	}
	slowHook.Store(&slowRequestHook{threshold: threshold, fn: fn})
}

// BytesIn counts a request frame read; BytesOut a response written.
func BytesIn(n int)    { bytesIn.Add(float64(n)) }
func BytesOut(n int64) { bytesOut.Add(float64(n)) }

// PartitionError counts an error code answered for one partition of a Produce or Fetch.
func PartitionError(key int16, code int16) {
	partitionErrors.WithLabelValues(kmsg.NameForKey(key), errorName(code)).Inc()
}

func errorName(code int16) string {
	if err := kerr.ErrorForCode(code); err != nil {
		if ke, ok := err.(*kerr.Error); ok {
			return ke.Message
		}
	}
	return strconv.Itoa(int(code))
}

// Topic is one topic's byte and record counters, resolved once per topic.
type Topic struct {
	BytesIn, BytesOut, RecordsIn, RecordsOut prometheus.Counter
}

var topics sync.Map // topic name → *Topic

// ForTopic returns the topic's counters (a map load after the first call).
func ForTopic(name string) *Topic {
	if t, ok := topics.Load(name); ok {
		return t.(*Topic)
	}
	t := &Topic{
		BytesIn: topicBytes.WithLabelValues(name, "in"), BytesOut: topicBytes.WithLabelValues(name, "out"),
		RecordsIn: topicRecords.WithLabelValues(name, "in"), RecordsOut: topicRecords.WithLabelValues(name, "out"),
	}
	actual, _ := topics.LoadOrStore(name, t)
	return actual.(*Topic)
}

// ForgetTopic drops a deleted topic's series.
func ForgetTopic(name string) {
	topics.Delete(name)
	for _, dir := range []string{"in", "out"} {
		topicBytes.DeleteLabelValues(name, dir)
		topicRecords.DeleteLabelValues(name, dir)
	}
}

// Handler serves /metrics from Registry, /healthz (200 while the process serves HTTP) and
// /readyz (200 once ready reports true: the broker serves Kafka clients).
func Handler(ready *atomic.Bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(Registry, promhttp.HandlerOpts{Registry: Registry}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	return mux
}
