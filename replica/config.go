package replica

import (
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/sluicebroker/sluice/batch"
	"github.com/sluicebroker/sluice/segment"
)

// Config configures a Manager.
type Config struct {
	DataDir string          // partitions live in <DataDir>/<topic>-<partition>/ (Kafka layout)
	Log     segment.Options // defaults; topic configs override (see TopicOptions). All zero: segment defaults, unlimited retention

	MaxMessageBytes        int32         // default max.message.bytes; 1 MiB if zero
	RetentionCheckInterval time.Duration // how often retention runs; 30s if zero
	ReplicaLagMax          time.Duration // a follower this far behind leaves the ISR; 10s if zero

	// The log cleaner (cleanup.policy=compact): CleanerThreads 0 turns it off (more than one runs
	// as one: Kafka's log.cleaner.threads, whose default is 1); CleanerIOBytesPerSecond bounds its
	// reads and writes (0: unbounded, Kafka's default); CleanerBackoff is the pause when no log is
	// due (Kafka's log.cleaner.backoff.ms; 15s if zero).
	CleanerThreads          int
	CleanerIOBytesPerSecond int64
	CleanerBackoff          time.Duration
	Logger                  *slog.Logger // slog.Default() if nil
}

const (
	defaultMaxMessageBytes        = 1 << 20
	defaultRetentionCheckInterval = 30 * time.Second
)

func (c *Config) setDefaults() {
	if c.Log == (segment.Options{}) {
		// segment reads RetentionBytes 0 as "keep only the active segment";
		// an unset Options means Kafka's default, unlimited.
		c.Log.RetentionBytes = -1
	}
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = defaultMaxMessageBytes
	}
	if c.RetentionCheckInterval <= 0 {
		c.RetentionCheckInterval = defaultRetentionCheckInterval
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.ReplicaLagMax <= 0 {
		c.ReplicaLagMax = defaultReplicaLagMax
	}
	if c.CleanerBackoff <= 0 {
		c.CleanerBackoff = 15 * time.Second
	}
}

// Kafka topic config names this package understands.
const (
	ConfigRetentionMs          = "retention.ms"
	ConfigRetentionBytes       = "retention.bytes"
	ConfigSegmentBytes         = "segment.bytes"
	ConfigSegmentMs            = "segment.ms"
	ConfigMaxMessageBytes      = "max.message.bytes"
	ConfigMessageTimestampType = "message.timestamp.type"
	ConfigCleanupPolicy        = "cleanup.policy"
	ConfigMinInSyncReplicas    = "min.insync.replicas"
	ConfigCompressionType      = "compression.type"

	ConfigDeleteRetentionMs      = "delete.retention.ms"
	ConfigMinCompactionLagMs     = "min.compaction.lag.ms"
	ConfigMaxCompactionLagMs     = "max.compaction.lag.ms"
	ConfigMinCleanableDirtyRatio = "min.cleanable.dirty.ratio"
)

// Kafka's defaults for the compaction configs.
const (
	defaultDeleteRetention   = 24 * time.Hour
	defaultMinCleanableRatio = 0.5
)

// CompressionProducer is TopicConfig.Compression for compression.type=producer: batches are stored
// as the producer compressed them (the default, and the zero-copy path).
const CompressionProducer int8 = -1

// TopicConfig is a topic's effective settings: Kafka topic configs over the
// broker defaults.
type TopicConfig struct {
	Log             segment.Options
	MaxMessageBytes int32
	LogAppendTime   bool // message.timestamp.type=LogAppendTime
	// Compact is cleanup.policy containing compact: the log cleaner keeps the latest record per key
	// (replica/cleaner.go), and produce refuses records without a key. Compact alone turns time and
	// size retention off; compact,delete keeps both.
	Compact bool
	// Compaction settings, Kafka's: DeleteRetention (delete.retention.ms) is how long a tombstone
	// (and a transaction marker) outlives the cleaning that first saw it; MinCompactionLag
	// (min.compaction.lag.ms) keeps records this young uncleaned; MaxCompactionLag
	// (max.compaction.lag.ms, 0 = none) makes a log due for cleaning whatever its dirty ratio once
	// its oldest dirty record is this old; MinCleanableRatio (min.cleanable.dirty.ratio) is the
	// share of dirty bytes that makes a log due.
	DeleteRetention   time.Duration
	MinCompactionLag  time.Duration
	MaxCompactionLag  time.Duration
	MinCleanableRatio float64
	// MinInSyncReplicas is min.insync.replicas: an acks=all produce fails
	// with NOT_ENOUGH_REPLICAS while fewer replicas are in sync.
	MinInSyncReplicas int
	// Compression is compression.type: the codec (batch.Codec*) every batch is stored with,
	// recompressed on the broker when the producer used another; CompressionProducer keeps the
	// producer's.
	Compression int8
}

// TopicOptions turns Kafka topic configs over defaults into segment options,
// validating every config it knows (including those that are not segment
// options) so the broker can reject bad AlterConfigs/CreateTopics values.
// Unknown config names are ignored.
func TopicOptions(defaults segment.Options, configs map[string]string) (segment.Options, error) {
	tc, err := ParseTopicConfig(defaults, defaultMaxMessageBytes, configs)
	return tc.Log, err
}

// ParseTopicConfig is TopicOptions with the settings that are not segment
// options; maxMessageBytes is the broker default for max.message.bytes.
func ParseTopicConfig(defaults segment.Options, maxMessageBytes int32, configs map[string]string) (TopicConfig, error) {
	tc := TopicConfig{Log: defaults, MaxMessageBytes: maxMessageBytes, MinInSyncReplicas: 1, Compression: CompressionProducer,
		DeleteRetention: defaultDeleteRetention, MinCleanableRatio: defaultMinCleanableRatio}
	deleteRetention := true
	for name, v := range configs {
		switch name {
		case ConfigRetentionMs:
			ms, err := parseInt(name, v, -1, math.MaxInt64)
			if err != nil {
				return tc, err
			}
			switch {
			case ms < 0:
				tc.Log.RetentionAge = 0 // segment: forever
			case ms > int64(math.MaxInt64/time.Millisecond):
				return tc, fmt.Errorf("invalid %s %q: too large", name, v)
			default:
				// 0 is Kafka's "delete at once"; segment reads 0 as forever.
				tc.Log.RetentionAge = max(time.Duration(ms)*time.Millisecond, time.Millisecond)
			}
		case ConfigRetentionBytes:
			// Kafka: -1 unlimited, 0 keeps only the active segment; segment
			// reads any negative value as unlimited.
			n, err := parseInt(name, v, -1, math.MaxInt64)
			if err != nil {
				return tc, err
			}
			tc.Log.RetentionBytes = n
		case ConfigSegmentBytes:
			n, err := parseInt(name, v, 14, math.MaxInt32) // Kafka's bounds
			if err != nil {
				return tc, err
			}
			tc.Log.SegmentBytes = n
		case ConfigSegmentMs:
			ms, err := parseInt(name, v, 1, int64(math.MaxInt64/time.Millisecond))
			if err != nil {
				return tc, err
			}
			tc.Log.SegmentAge = time.Duration(ms) * time.Millisecond
		case ConfigMaxMessageBytes:
			n, err := parseInt(name, v, 0, math.MaxInt32)
			if err != nil {
				return tc, err
			}
			tc.MaxMessageBytes = int32(n)
		case ConfigMinInSyncReplicas:
			n, err := parseInt(name, v, 1, math.MaxInt16)
			if err != nil {
				return tc, err
			}
			tc.MinInSyncReplicas = int(n)
		case ConfigMessageTimestampType:
			switch v {
			case "CreateTime":
				tc.LogAppendTime = false
			case "LogAppendTime":
				tc.LogAppendTime = true
			default:
				return tc, fmt.Errorf("invalid %s %q: must be CreateTime or LogAppendTime", name, v)
			}
		case ConfigCompressionType:
			if v == "producer" {
				tc.Compression = CompressionProducer
				break
			}
			codec, ok := batch.CodecByName[v]
			if !ok {
				return tc, fmt.Errorf("invalid %s %q: must be producer, uncompressed, gzip, snappy, lz4 or zstd", name, v)
			}
			tc.Compression = codec
		case ConfigDeleteRetentionMs, ConfigMinCompactionLagMs, ConfigMaxCompactionLagMs:
			ms, err := parseInt(name, v, 0, math.MaxInt64)
			if err != nil {
				return tc, err
			}
			// Kafka's Long.MAX_VALUE (max.compaction.lag.ms's default) and anything a Duration cannot
			// hold mean "never": 0 here for the maximum lag, the longest Duration for the others.
			d := time.Duration(math.MaxInt64)
			if ms <= int64(math.MaxInt64/time.Millisecond) {
				d = time.Duration(ms) * time.Millisecond
			}
			switch name {
			case ConfigDeleteRetentionMs:
				tc.DeleteRetention = d
			case ConfigMinCompactionLagMs:
				tc.MinCompactionLag = d
			default:
				if d == math.MaxInt64 {
					d = 0
				}
				tc.MaxCompactionLag = d
			}
		case ConfigMinCleanableDirtyRatio:
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil || f < 0 || f > 1 {
				return tc, fmt.Errorf("invalid %s %q: must be a number in [0, 1]", name, v)
			}
			tc.MinCleanableRatio = f
		case ConfigCleanupPolicy:
			deleteRetention, tc.Compact = false, false
			for _, p := range strings.Split(v, ",") {
				switch strings.TrimSpace(p) {
				case "delete":
					deleteRetention = true
				case "compact":
					tc.Compact = true
				default:
					return tc, fmt.Errorf("invalid %s %q: must be delete, compact or both", name, v)
				}
			}
			if !deleteRetention && !tc.Compact {
				return tc, fmt.Errorf("invalid %s %q: empty", name, v)
			}
		}
	}
	if !deleteRetention {
		tc.Log.RetentionAge, tc.Log.RetentionBytes = 0, -1
	}
	return tc, nil
}

func parseInt(name, v string, lo, hi int64) (int64, error) {
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("invalid %s %q: must be an integer in [%d, %d]", name, v, lo, hi)
	}
	return n, nil
}
