package broker

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicebroker/sluice/replica"
)

func init() {
	register(kmsg.DescribeConfigs, 0, 4, serveRequest((*Broker).handleDescribeConfigs))
	register(kmsg.AlterConfigs, 0, 2, serveRequest((*Broker).handleAlterConfigs))
	register(kmsg.IncrementalAlterConfigs, 0, 1, serveRequest((*Broker).handleIncrementalAlterConfigs))
}

// Kafka config resource types, sources and value types, by shorter names.
const (
	resourceTopic  = kmsg.ConfigResourceTypeTopic
	resourceBroker = kmsg.ConfigResourceTypeBroker

	sourceDynamicTopic = kmsg.ConfigSourceDynamicTopicConfig
	sourceStaticBroker = kmsg.ConfigSourceStaticBrokerConfig
	sourceDefault      = kmsg.ConfigSourceDefaultConfig

	configTypeString  = kmsg.ConfigTypeString
	configTypeInt     = kmsg.ConfigTypeInt
	configTypeLong    = kmsg.ConfigTypeLong
	configTypeList    = kmsg.ConfigTypeList
	configTypeBoolean = kmsg.ConfigTypeBoolean
)

// topicConfig describes one topic-level config Sluice honours.
type topicConfig struct {
	name       string
	configType kmsg.ConfigType
	def        func(b *Broker) string // the broker-wide default
	check      func(v string) error   // extra validation beyond replica.TopicOptions
}

func msString(d time.Duration) string {
	if d <= 0 {
		return "-1"
	}
	return strconv.FormatInt(d.Milliseconds(), 10)
}

// topicConfigs is every topic config DescribeConfigs lists and AlterConfigs accepts.
var topicConfigs = []topicConfig{
	// cleanup.policy: delete, compact or both (replica.ParseTopicConfig validates); compact runs the
	// log cleaner (replica/cleaner.go) and refuses records without a key.
	{name: "cleanup.policy", configType: configTypeList, def: func(*Broker) string { return "delete" }},
	// compression.type: producer keeps each batch as sent (zero copy); a codec makes the broker
	// recompress batches the producer compressed otherwise (broker/produce.go).
	{name: "compression.type", configType: configTypeString, def: func(*Broker) string { return "producer" }},
	// Accepted and described without effect, as configs Kafka's tools and clients set: flush.* (every
	// batch is fsynced before it is acknowledged), *.replication.throttled.replicas (set by
	// kafka-reassign-partitions --throttle; Raft catch-up is not throttled), message.downconversion.enable
	// and preallocate (segments are always preallocated).
	// Compaction settings (delete.retention.ms, min/max.compaction.lag.ms, min.cleanable.dirty.ratio)
	// steer the log cleaner of a compacted topic; on a delete topic they have no effect, as in Kafka.
	{name: "delete.retention.ms", configType: configTypeLong, def: func(*Broker) string { return "86400000" }, check: checkLong},
	{name: "file.delete.delay.ms", configType: configTypeLong, def: func(*Broker) string { return "60000" }, check: checkLong},
	{name: "flush.messages", configType: configTypeLong, def: func(*Broker) string { return "9223372036854775807" }, check: checkLong},
	{name: "flush.ms", configType: configTypeLong, def: func(*Broker) string { return "9223372036854775807" }, check: checkLong},
	{name: "follower.replication.throttled.replicas", configType: configTypeList, def: func(*Broker) string { return "" }},
	{name: "index.interval.bytes", configType: configTypeInt, def: func(b *Broker) string { return strconv.Itoa(b.cfg.Log.IndexIntervalBytes) }},
	{name: "leader.replication.throttled.replicas", configType: configTypeList, def: func(*Broker) string { return "" }},
	{name: "max.compaction.lag.ms", configType: configTypeLong, def: func(*Broker) string { return "9223372036854775807" }, check: checkLong},
	{name: "max.message.bytes", configType: configTypeInt, def: func(b *Broker) string { return strconv.Itoa(int(b.cfg.MaxMessageBytes)) }},
	{name: "message.downconversion.enable", configType: configTypeBoolean, def: func(*Broker) string { return "true" }, check: checkBool},
	// message.format.version: deprecated in Kafka 3.0, ignored there (every batch is v2), removed in 4.0.
	{name: "message.format.version", configType: configTypeString, def: func(*Broker) string { return "3.0-IV1" }, check: checkMessageFormatVersion},
	{name: "message.timestamp.type", configType: configTypeString, def: func(*Broker) string { return "CreateTime" }},
	{name: "min.insync.replicas", configType: configTypeInt, def: func(*Broker) string { return "1" }, check: func(v string) error {
		if n, err := strconv.Atoi(v); err != nil || n < 1 {
			return fmt.Errorf("min.insync.replicas %q must be an integer >= 1", v)
		}
		return nil
	}},
	{name: "min.cleanable.dirty.ratio", configType: kmsg.ConfigTypeDouble, def: func(*Broker) string { return "0.5" }, check: func(v string) error {
		if f, err := strconv.ParseFloat(v, 64); err != nil || f < 0 || f > 1 {
			return fmt.Errorf("min.cleanable.dirty.ratio %q must be a number between 0 and 1", v)
		}
		return nil
	}},
	{name: "min.compaction.lag.ms", configType: configTypeLong, def: func(*Broker) string { return "0" }, check: checkLong},
	{name: "preallocate", configType: configTypeBoolean, def: func(*Broker) string { return "false" }, check: checkBool},
	{name: "retention.bytes", configType: configTypeLong, def: func(b *Broker) string { return strconv.FormatInt(b.cfg.Log.RetentionBytes, 10) }},
	{name: "retention.ms", configType: configTypeLong, def: func(b *Broker) string { return msString(b.cfg.Log.RetentionAge) }},
	{name: "segment.bytes", configType: configTypeInt, def: func(b *Broker) string { return strconv.FormatInt(b.cfg.Log.SegmentBytes, 10) }},
	{name: "segment.ms", configType: configTypeLong, def: func(b *Broker) string { return msString(b.cfg.Log.SegmentAge) }},
	// Raft never elects a replica that lacks committed data, so an unclean election cannot happen.
	{name: "unclean.leader.election.enable", configType: configTypeBoolean, def: func(*Broker) string { return "false" }, check: checkBool},
}

func checkLong(v string) error {
	if _, err := strconv.ParseInt(v, 10, 64); err != nil {
		return fmt.Errorf("%q is not a long integer", v)
	}
	return nil
}

func checkBool(v string) error {
	if v != "true" && v != "false" {
		return fmt.Errorf("%q is not a boolean (true or false)", v)
	}
	return nil
}

// checkMessageFormatVersion accepts Kafka's version strings (0.8.0 to 3.x, with an optional -IVn).
func checkMessageFormatVersion(v string) error {
	base, iv, hasIV := strings.Cut(v, "-IV")
	parts := strings.Split(base, ".")
	ok := len(parts) >= 2 && len(parts) <= 4 && (!hasIV || iv != "")
	for _, p := range append(parts, iv) {
		if _, err := strconv.Atoi(p); p != "" && err != nil {
			ok = false
		}
	}
	if !ok {
		return fmt.Errorf("message.format.version %q is not a Kafka version (e.g. 2.8 or 3.0-IV1)", v)
	}
	return nil
}

var topicConfigByName = func() map[string]*topicConfig {
	m := make(map[string]*topicConfig, len(topicConfigs))
	for i := range topicConfigs {
		m[topicConfigs[i].name] = &topicConfigs[i]
	}
	return m
}()

// validateTopicConfigs checks names and values of a full set of explicit topic configs.
func (b *Broker) validateTopicConfigs(configs map[string]string) error {
	for name, v := range configs {
		tc, ok := topicConfigByName[name]
		if !ok {
			return fmt.Errorf("unknown or unsupported topic config %q", name)
		}
		if tc.check != nil {
			if err := tc.check(v); err != nil {
				return err
			}
		}
	}
	_, err := replica.TopicOptions(b.cfg.Log, configs)
	return err
}

// configEntry is one row of a DescribeConfigs answer, before it takes a version-specific shape.
type configEntry struct {
	Name        string
	Value       *string
	ReadOnly    bool
	Source      kmsg.ConfigSource
	IsSensitive bool
	Type        kmsg.ConfigType
}

// describeTopicConfigs lists the topic's effective configs, all or only the named ones.
func (b *Broker) describeTopicConfigs(explicit map[string]string, names []string, onlyNamed bool) []configEntry {
	want := func(string) bool { return true }
	if onlyNamed {
		set := make(map[string]bool, len(names))
		for _, n := range names {
			set[n] = true
		}
		want = func(n string) bool { return set[n] }
	}
	var out []configEntry
	for _, tc := range topicConfigs {
		if !want(tc.name) {
			continue
		}
		e := configEntry{Name: tc.name, Source: sourceDefault, Type: tc.configType}
		v := tc.def(b)
		if ev, ok := explicit[tc.name]; ok {
			v, e.Source = ev, sourceDynamicTopic
		}
		e.Value = &v
		out = append(out, e)
	}
	return out
}

// brokerConfigs lists the broker-level configs a client may ask about.
func (b *Broker) brokerConfigs(named []string, onlyNamed bool) []configEntry {
	kv := map[string]string{
		"broker.id":                  strconv.Itoa(int(b.cfg.NodeID)),
		"num.partitions":             strconv.Itoa(int(b.cfg.DefaultPartitions)),
		"auto.create.topics.enable":  strconv.FormatBool(b.cfg.AutoCreateTopics),
		"message.max.bytes":          strconv.Itoa(int(b.cfg.MaxMessageBytes)),
		"log.segment.bytes":          strconv.FormatInt(b.cfg.Log.SegmentBytes, 10),
		"log.retention.ms":           msString(b.cfg.Log.RetentionAge),
		"log.retention.bytes":        strconv.FormatInt(b.cfg.Log.RetentionBytes, 10),
		"default.replication.factor": strconv.Itoa(int(b.cfg.DefaultReplicationFactor)),
	}
	b.addToolBrokerConfigs(kv)
	names := make([]string, 0, len(kv))
	for n := range kv {
		if onlyNamed && !slices.Contains(named, n) {
			continue
		}
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]configEntry, 0, len(names))
	for _, n := range names {
		v := kv[n]
		out = append(out, configEntry{Name: n, Value: &v, ReadOnly: true, Source: sourceStaticBroker, Type: configTypeString})
	}
	return out
}

func (b *Broker) handleDescribeConfigs(req *kmsg.DescribeConfigsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.DescribeConfigsResponse)
	md := b.ctl.Metadata()
	for _, r := range req.Resources {
		sr := kmsg.NewDescribeConfigsResponseResource()
		sr.ResourceType, sr.ResourceName = r.ResourceType, r.ResourceName
		var entries []configEntry
		switch r.ResourceType {
		case resourceTopic:
			t, ok := md.Topics[r.ResourceName]
			if !ok {
				sr.ErrorCode = kerr.UnknownTopicOrPartition.Code
				break
			}
			entries = b.describeTopicConfigs(t.Configs, r.ConfigNames, r.ConfigNames != nil)
		case resourceBroker:
			if r.ResourceName != "" && r.ResourceName != strconv.Itoa(int(b.cfg.NodeID)) {
				sr.ErrorCode = kerr.InvalidRequest.Code
				break
			}
			entries = b.brokerConfigs(r.ConfigNames, r.ConfigNames != nil)
		default:
			sr.ErrorCode = kerr.InvalidRequest.Code
		}
		for _, e := range entries {
			c := kmsg.NewDescribeConfigsResponseResourceConfig()
			c.Name, c.Value, c.ReadOnly, c.IsSensitive = e.Name, e.Value, e.ReadOnly, e.IsSensitive
			c.Source = e.Source
			c.IsDefault = e.Source == sourceDefault
			c.ConfigType = e.Type
			sr.Configs = append(sr.Configs, c)
		}
		resp.Resources = append(resp.Resources, sr)
	}
	return resp
}

// handleAlterConfigs replaces a topic's whole explicit config set (the legacy, non-incremental API).
func (b *Broker) handleAlterConfigs(req *kmsg.AlterConfigsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.AlterConfigsResponse)
	for _, r := range req.Resources {
		sr := kmsg.NewAlterConfigsResponseResource()
		sr.ResourceType, sr.ResourceName = r.ResourceType, r.ResourceName
		set := make(map[string]string, len(r.Configs))
		for _, c := range r.Configs {
			if c.Value != nil {
				set[c.Name] = *c.Value
			}
		}
		err := b.alterTopicConfigs(r.ResourceType, r.ResourceName, func(map[string]string) (map[string]string, error) { return set, nil }, req.ValidateOnly)
		sr.ErrorCode, sr.ErrorMessage = alterError(err)
		resp.Resources = append(resp.Resources, sr)
	}
	return resp
}

// Incremental config operations (KIP-339).
const (
	opSet      = kmsg.IncrementalAlterConfigOpSet
	opDelete   = kmsg.IncrementalAlterConfigOpDelete
	opAppend   = kmsg.IncrementalAlterConfigOpAppend
	opSubtract = kmsg.IncrementalAlterConfigOpSubtract
)

func (b *Broker) handleIncrementalAlterConfigs(req *kmsg.IncrementalAlterConfigsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.IncrementalAlterConfigsResponse)
	for _, r := range req.Resources {
		sr := kmsg.NewIncrementalAlterConfigsResponseResource()
		sr.ResourceType, sr.ResourceName = r.ResourceType, r.ResourceName
		err := b.alterTopicConfigs(r.ResourceType, r.ResourceName, func(cur map[string]string) (map[string]string, error) {
			next := make(map[string]string, len(cur))
			for k, v := range cur {
				next[k] = v
			}
			for _, c := range r.Configs {
				switch c.Op {
				case opSet:
					if c.Value == nil {
						return nil, fmt.Errorf("config %q: SET needs a value", c.Name)
					}
					next[c.Name] = *c.Value
				case opDelete:
					delete(next, c.Name)
				case opAppend, opSubtract:
					tc, ok := topicConfigByName[c.Name]
					if !ok || tc.configType != configTypeList || c.Value == nil {
						return nil, fmt.Errorf("config %q: APPEND and SUBTRACT apply to list configs, with a value", c.Name)
					}
					cur, set := next[c.Name]
					if !set {
						cur = tc.def(b)
					}
					next[c.Name] = editList(cur, *c.Value, c.Op == opAppend)
				default:
					return nil, fmt.Errorf("config %q: unknown operation %d", c.Name, c.Op)
				}
			}
			return next, nil
		}, req.ValidateOnly)
		sr.ErrorCode, sr.ErrorMessage = alterError(err)
		resp.Resources = append(resp.Resources, sr)
	}
	return resp
}

// editList appends the comma-separated items of v to the list value cur (those not in it yet), or
// subtracts them, as Kafka's IncrementalAlterConfigs does for list configs.
func editList(cur, v string, appendItems bool) string {
	var items []string
	for _, it := range strings.Split(cur, ",") {
		if it = strings.TrimSpace(it); it != "" {
			items = append(items, it)
		}
	}
	for _, it := range strings.Split(v, ",") {
		it = strings.TrimSpace(it)
		i := slices.Index(items, it)
		switch {
		case it == "":
		case appendItems && i < 0:
			items = append(items, it)
		case !appendItems && i >= 0:
			items = slices.Delete(items, i, i+1)
		}
	}
	return strings.Join(items, ",")
}

// configError marks a bad config request (INVALID_CONFIG) apart from failures of the cluster.
type configError struct{ error }

func alterError(err error) (int16, *string) {
	if err == nil {
		return 0, nil
	}
	if _, ok := err.(configError); ok {
		return kerr.InvalidConfig.Code, errorMessage(err)
	}
	return errorCode(err), errorMessage(err)
}

// alterTopicConfigs computes a topic's new explicit configs, validates them and stores them through the
// controller; replicas pick the change up from the metadata.
func (b *Broker) alterTopicConfigs(resourceType kmsg.ConfigResourceType, name string, edit func(map[string]string) (map[string]string, error), validateOnly bool) error {
	switch resourceType {
	case resourceTopic:
	case resourceBroker:
		return configError{fmt.Errorf("broker configs are static in Sluice; set them with sluice serve flags")}
	default:
		return configError{fmt.Errorf("resource type %d is not supported", resourceType)}
	}
	t, ok := b.ctl.Metadata().Topics[name]
	if !ok {
		return kerr.UnknownTopicOrPartition
	}
	next, err := edit(t.Configs)
	if err != nil {
		return configError{err}
	}
	if err := b.validateTopicConfigs(next); err != nil {
		return configError{err}
	}
	if validateOnly {
		return nil
	}
	var remove []string
	for k := range t.Configs {
		if _, ok := next[k]; !ok {
			remove = append(remove, k)
		}
	}
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := b.ctl.AlterTopicConfig(ctx, name, next, remove); err != nil {
		return err
	}
	return b.replicas.Apply(b.ctl.Metadata())
}
