// Package loadgen drives any Kafka-compatible broker through franz-go (kgo) and measures it:
// open-loop (fixed rate) and closed-loop (max rate) producers, consumers in groups,
// publish and end-to-end latency in HdrHistograms, result files, comparisons and charts.
package loadgen

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// StampSize is the number of bytes loadgen writes at the start of every record value:
// the intended send time (int64 Unix nanoseconds, big endian), the producer index
// (uint32) and the producer's sequence number (uint64). Smaller record sizes are raised to it.
const StampSize = 20

// Workload is everything one `loadgen run` does. Zero values mean defaults (see Defaults).
type Workload struct {
	Name    string   `yaml:"name" json:"name"`
	Brokers []string `yaml:"brokers" json:"brokers"`
	// Client is kgo (franz-go: what an application sees) or native (loadgen's own lean producer and
	// consumer, whose ceiling is far above the broker's; see native.go). Empty reads as kgo.
	Client string `yaml:"client" json:"client,omitempty"`

	// Topic names the topic (or the prefix "topic-0", "topic-1"... when Topics > 1).
	// Empty: a fresh name per run, deleted at the end unless KeepTopics.
	Topic             string `yaml:"topic" json:"topic"`
	Topics            int    `yaml:"topics" json:"topics"`
	Partitions        int32  `yaml:"partitions" json:"partitions"`
	ReplicationFactor int16  `yaml:"replication_factor" json:"replication_factor"`
	KeepTopics        bool   `yaml:"keep_topics" json:"keep_topics"`

	RecordSize SizeDist `yaml:"record_size" json:"record_size"`
	Payload    string   `yaml:"payload" json:"payload"` // random | text
	Keys       KeyDist  `yaml:"keys" json:"keys"`

	Producers int     `yaml:"producers" json:"producers"`
	Rate      float64 `yaml:"rate" json:"rate"` // records/s over all producers; 0 = as fast as possible

	Acks               string   `yaml:"acks" json:"acks"` // 0 | 1 | all
	Idempotent         bool     `yaml:"idempotent" json:"idempotent"`
	Linger             Duration `yaml:"linger" json:"linger"`
	BatchMaxBytes      int32    `yaml:"batch_max_bytes" json:"batch_max_bytes"`
	MaxInFlight        int      `yaml:"max_in_flight" json:"max_in_flight"`               // produce requests in flight per broker (without idempotence; kgo uses 5 with it)
	MaxBufferedRecords int      `yaml:"max_buffered_records" json:"max_buffered_records"` // per producer: the closed-loop in-flight bound
	Compression        string   `yaml:"compression" json:"compression"`                   // none | gzip | snappy | lz4 | zstd

	// ConsumerGroups 0 with Consumers > 0: the consumers split the partitions among themselves
	// without a group coordinator (direct assignment), for brokers without group support.
	ConsumerGroups int `yaml:"consumer_groups" json:"consumer_groups"`
	Consumers      int `yaml:"consumers" json:"consumers"` // per group; 0 = produce only
	// FetchMaxPartitionBytes is the consumers' max.partition.fetch.bytes (Kafka's default 1 MiB);
	// large records need more, or each fetch round trip carries one record per partition.
	FetchMaxPartitionBytes int32 `yaml:"fetch_max_partition_bytes" json:"fetch_max_partition_bytes"`

	Warmup       Duration `yaml:"warmup" json:"warmup"`
	Duration     Duration `yaml:"duration" json:"duration"`
	DrainTimeout Duration `yaml:"drain_timeout" json:"drain_timeout"` // how long acknowledgements and consumers may take after producing stops

	Security `yaml:",inline" json:",inline"` // TLS and SASL (security.go)
}

// Defaults returns the workload used when nothing is said: 1 KiB random records,
// 1 topic of 8 partitions, 1 producer at max rate, acks=all, idempotent, 1 group of 1 consumer.
func Defaults() Workload {
	return Workload{
		Name:                   "default",
		Client:                 "kgo",
		Brokers:                []string{"127.0.0.1:9092"},
		Topics:                 1,
		Partitions:             8,
		ReplicationFactor:      1,
		RecordSize:             SizeDist{Kind: "fixed", Mean: 1024},
		Payload:                "random",
		Keys:                   KeyDist{Kind: "none"},
		Producers:              1,
		Acks:                   "all",
		Idempotent:             true,
		Linger:                 Duration(time.Millisecond),
		BatchMaxBytes:          1 << 20,
		MaxInFlight:            5,
		MaxBufferedRecords:     10000,
		Compression:            "none",
		ConsumerGroups:         1,
		Consumers:              1,
		FetchMaxPartitionBytes: 1 << 20,
		Warmup:                 Duration(2 * time.Second),
		Duration:               Duration(10 * time.Second),
		DrainTimeout:           Duration(10 * time.Second),
	}
}

// LoadWorkload reads a YAML workload file over the defaults. Unknown keys are an error.
func LoadWorkload(path string) (Workload, error) {
	w := Defaults()
	b, err := os.ReadFile(path)
	if err != nil {
		return w, err
	}
	if err := ParseWorkload(b, &w); err != nil {
		return w, fmt.Errorf("%s: %w", path, err)
	}
	return w, nil
}

// ParseWorkload decodes YAML into w, keeping w's values for keys the document does not name.
func ParseWorkload(b []byte, w *Workload) error {
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(w); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return w.Validate()
}

// Validate checks the workload and fills in what follows from other fields.
func (w *Workload) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if len(w.Brokers) == 0 {
		bad("no brokers")
	}
	if _, err := w.Security.opts(); err != nil {
		bad("security: %v", err)
	}
	switch w.Client {
	case "":
		w.Client = "kgo"
	case "kgo", "native":
	default:
		bad("client must be kgo or native, not %q", w.Client)
	}
	if w.Client == "native" && (w.Security.TLS || w.Security.TLSCA != "" || w.Security.SASLMechanism != "") {
		bad("the native client speaks plaintext without SASL: use -client kgo with TLS or SASL")
	}
	if w.Topics < 1 {
		bad("topics must be >= 1")
	}
	if w.Partitions < 1 {
		bad("partitions must be >= 1")
	}
	if w.ReplicationFactor < 1 {
		bad("replication_factor must be >= 1")
	}
	if w.Producers < 1 {
		bad("producers must be >= 1")
	}
	if w.Producers < w.Topics {
		bad("producers (%d) must be >= topics (%d): each producer writes one topic", w.Producers, w.Topics)
	}
	if w.Rate < 0 {
		bad("rate must be >= 0")
	}
	switch w.Acks {
	case "0", "1", "all", "-1":
	default:
		bad("acks must be 0, 1 or all, not %q", w.Acks)
	}
	if w.Idempotent && w.Acks != "all" && w.Acks != "-1" {
		bad("idempotence needs acks=all")
	}
	switch w.Compression {
	case "none", "gzip", "snappy", "lz4", "zstd":
	default:
		bad("compression must be none, gzip, snappy, lz4 or zstd, not %q", w.Compression)
	}
	switch w.Payload {
	case "random", "text":
	default:
		bad("payload must be random or text, not %q", w.Payload)
	}
	if w.MaxBufferedRecords < 1 {
		bad("max_buffered_records must be >= 1")
	}
	if w.MaxInFlight < 1 {
		bad("max_in_flight must be >= 1")
	}
	if w.BatchMaxBytes < 1 {
		bad("batch_max_bytes must be >= 1")
	}
	if w.FetchMaxPartitionBytes < 1 {
		bad("fetch_max_partition_bytes must be >= 1")
	}
	if w.Consumers < 0 || w.ConsumerGroups < 0 {
		bad("consumers and consumer_groups must be >= 0")
	}
	if w.Consumers > 0 && w.ConsumerGroups == 0 && w.Consumers > w.Topics*int(w.Partitions) {
		bad("direct consumers (consumer_groups 0) need a partition each: %d consumers, %d partitions", w.Consumers, w.Topics*int(w.Partitions))
	}
	if w.Duration <= 0 {
		bad("duration must be > 0")
	}
	if w.Warmup < 0 || w.DrainTimeout < 0 {
		bad("warmup and drain_timeout must be >= 0")
	}
	if err := w.RecordSize.validate(); err != nil {
		errs = append(errs, err)
	}
	if err := w.Keys.validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// BindFlags registers one flag per workload field on fs, writing into w.
// Call it with w already holding the defaults (or a workload file) so flags override them.
func (w *Workload) BindFlags(fs *flag.FlagSet) {
	w.Security.bindFlags(fs)
	fs.StringVar(&w.Name, "name", w.Name, "workload name (used in result directory names)")
	fs.Func("brokers", "bootstrap servers, comma separated (default "+strings.Join(w.Brokers, ",")+")", func(s string) error {
		w.Brokers = strings.Split(s, ",")
		return nil
	})
	fs.StringVar(&w.Client, "client", w.Client, "kgo (franz-go, what applications see) | native (loadgen's own lean client, for the broker's limit)")
	fs.StringVar(&w.Topic, "topic", w.Topic, "topic name or prefix; empty = a fresh topic per run, deleted at the end")
	fs.IntVar(&w.Topics, "topics", w.Topics, "number of topics")
	fs.Func("partitions", fmt.Sprintf("partitions per topic (default %d)", w.Partitions), func(s string) error {
		n, err := strconv.ParseInt(s, 10, 32)
		w.Partitions = int32(n)
		return err
	})
	fs.Func("replication-factor", fmt.Sprintf("replication factor of created topics (default %d)", w.ReplicationFactor), func(s string) error {
		n, err := strconv.ParseInt(s, 10, 16)
		w.ReplicationFactor = int16(n)
		return err
	})
	fs.BoolVar(&w.KeepTopics, "keep-topics", w.KeepTopics, "do not delete topics loadgen created")
	fs.Var(&w.RecordSize, "record-size", "record value size in bytes: N | uniform:MIN..MAX | normal:MEAN:STDDEV")
	fs.StringVar(&w.Payload, "payload", w.Payload, "payload kind: random | text (compressible)")
	fs.Var(&w.Keys, "keys", "record keys: none | roundrobin:N | random:N")
	fs.IntVar(&w.Producers, "producers", w.Producers, "producer clients")
	fs.Float64Var(&w.Rate, "rate", w.Rate, "target records/s over all producers; 0 = as fast as possible (closed loop)")
	fs.StringVar(&w.Acks, "acks", w.Acks, "acks: 0 | 1 | all")
	fs.BoolVar(&w.Idempotent, "idempotent", w.Idempotent, "idempotent producer (needs acks=all)")
	fs.Var(&w.Linger, "linger", "producer linger")
	fs.Func("batch-max-bytes", fmt.Sprintf("max record batch bytes (default %d)", w.BatchMaxBytes), func(s string) error {
		n, err := strconv.ParseInt(s, 10, 32)
		w.BatchMaxBytes = int32(n)
		return err
	})
	fs.IntVar(&w.MaxInFlight, "max-in-flight", w.MaxInFlight, "produce requests in flight per broker")
	fs.IntVar(&w.MaxBufferedRecords, "max-buffered-records", w.MaxBufferedRecords, "records in flight per producer (the closed-loop bound)")
	fs.StringVar(&w.Compression, "compression", w.Compression, "none | gzip | snappy | lz4 | zstd")
	fs.IntVar(&w.ConsumerGroups, "consumer-groups", w.ConsumerGroups, "consumer groups, each reading everything; 0 = consumers split the partitions without a group")
	fs.IntVar(&w.Consumers, "consumers", w.Consumers, "consumers per group; 0 = produce only")
	fs.Func("fetch-max-partition-bytes", fmt.Sprintf("consumers' max bytes per partition per fetch (default %d)", w.FetchMaxPartitionBytes), func(s string) error {
		n, err := strconv.ParseInt(s, 10, 32)
		w.FetchMaxPartitionBytes = int32(n)
		return err
	})
	fs.Var(&w.Warmup, "warmup", "warm-up, not measured")
	fs.Var(&w.Duration, "duration", "measured duration after warm-up")
	fs.Var(&w.DrainTimeout, "drain-timeout", "how long acknowledgements and consumers may take after producing stops; then unacknowledged records count as errors")
}

// TopicNames returns the topic names the workload writes.
func (w *Workload) TopicNames() []string {
	if w.Topics == 1 {
		return []string{w.Topic}
	}
	names := make([]string, w.Topics)
	for i := range names {
		names[i] = fmt.Sprintf("%s-%d", w.Topic, i)
	}
	return names
}

// Duration is a time.Duration written as text ("1.5s") in YAML, JSON and flags.
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// Set parses a Go duration; a bare number means seconds.
func (d *Duration) Set(s string) error {
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		*d = Duration(f * float64(time.Second))
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error { return d.Set(string(b)) }

// SizeDist is the distribution of record value sizes.
type SizeDist struct {
	Kind   string // fixed | uniform | normal
	Mean   int    // fixed size, or the normal mean
	Min    int    // uniform lower bound
	Max    int    // uniform upper bound
	StdDev int    // normal standard deviation
}

func (s SizeDist) String() string {
	switch s.Kind {
	case "uniform":
		return fmt.Sprintf("uniform:%d..%d", s.Min, s.Max)
	case "normal":
		return fmt.Sprintf("normal:%d:%d", s.Mean, s.StdDev)
	}
	return strconv.Itoa(s.Mean)
}

// Set parses "N", "uniform:MIN..MAX" or "normal:MEAN:STDDEV".
func (s *SizeDist) Set(v string) error {
	v = strings.TrimSpace(v)
	var err error
	switch {
	case strings.HasPrefix(v, "uniform:"):
		lo, hi, ok := strings.Cut(strings.TrimPrefix(v, "uniform:"), "..")
		if !ok {
			return fmt.Errorf("record size %q: want uniform:MIN..MAX", v)
		}
		*s = SizeDist{Kind: "uniform"}
		if s.Min, err = strconv.Atoi(lo); err == nil {
			s.Max, err = strconv.Atoi(hi)
		}
	case strings.HasPrefix(v, "normal:"):
		m, sd, ok := strings.Cut(strings.TrimPrefix(v, "normal:"), ":")
		if !ok {
			return fmt.Errorf("record size %q: want normal:MEAN:STDDEV", v)
		}
		*s = SizeDist{Kind: "normal"}
		if s.Mean, err = strconv.Atoi(m); err == nil {
			s.StdDev, err = strconv.Atoi(sd)
		}
	default:
		*s = SizeDist{Kind: "fixed"}
		s.Mean, err = parseBytes(v)
	}
	if err != nil {
		return fmt.Errorf("record size %q: %w", v, err)
	}
	return s.validate()
}

// parseBytes reads "1024", "1KiB", "1MiB".
func parseBytes(v string) (int, error) {
	mult := 1
	for suffix, m := range map[string]int{"KiB": 1 << 10, "MiB": 1 << 20, "KB": 1000, "MB": 1000 * 1000} {
		if strings.HasSuffix(v, suffix) {
			v, mult = strings.TrimSuffix(v, suffix), m
			break
		}
	}
	n, err := strconv.Atoi(strings.TrimSpace(v))
	return n * mult, err
}

func (s SizeDist) validate() error {
	switch s.Kind {
	case "fixed":
		if s.Mean < 1 {
			return fmt.Errorf("record size must be >= 1")
		}
	case "uniform":
		if s.Min < 1 || s.Max < s.Min {
			return fmt.Errorf("record size uniform:%d..%d: want 1 <= MIN <= MAX", s.Min, s.Max)
		}
	case "normal":
		if s.Mean < 1 || s.StdDev < 0 {
			return fmt.Errorf("record size normal:%d:%d: want MEAN >= 1, STDDEV >= 0", s.Mean, s.StdDev)
		}
	default:
		return fmt.Errorf("record size kind %q unknown", s.Kind)
	}
	return nil
}

// Largest is the biggest value size the distribution produces (normal is cut at mean + 4 sd).
func (s SizeDist) Largest() int {
	n := s.Mean
	switch s.Kind {
	case "uniform":
		n = s.Max
	case "normal":
		n = s.Mean + 4*s.StdDev
	}
	return max(n, StampSize)
}

// MarshalText implements encoding.TextMarshaler.
func (s SizeDist) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *SizeDist) UnmarshalText(b []byte) error { return s.Set(string(b)) }

// KeyDist says which keys records carry.
type KeyDist struct {
	Kind  string // none | roundrobin | random
	Count int    // distinct keys
}

func (k KeyDist) String() string {
	if k.Kind == "none" || k.Kind == "" {
		return "none"
	}
	return fmt.Sprintf("%s:%d", k.Kind, k.Count)
}

// Set parses "none", "roundrobin:N" or "random:N".
func (k *KeyDist) Set(v string) error {
	kind, n, _ := strings.Cut(strings.TrimSpace(v), ":")
	*k = KeyDist{Kind: kind}
	if kind != "none" {
		c, err := strconv.Atoi(n)
		if err != nil {
			return fmt.Errorf("keys %q: want none, roundrobin:N or random:N", v)
		}
		k.Count = c
	}
	return k.validate()
}

func (k KeyDist) validate() error {
	switch k.Kind {
	case "none":
		return nil
	case "roundrobin", "random":
		if k.Count < 1 {
			return fmt.Errorf("keys %s: count must be >= 1", k)
		}
		return nil
	}
	return fmt.Errorf("keys kind %q unknown: want none, roundrobin:N or random:N", k.Kind)
}

// MarshalText implements encoding.TextMarshaler.
func (k KeyDist) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (k *KeyDist) UnmarshalText(b []byte) error { return k.Set(string(b)) }
