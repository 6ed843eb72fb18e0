package broker

import (
	"encoding/binary"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicebroker/sluice/batch"
	"github.com/sluicebroker/sluice/metrics"
)

// The broker's state as Prometheus gauges, computed when /metrics is scraped (nothing on the request
// paths): partitions and leaders here, under-replicated partitions among those led here, offline
// partitions (on the controller leader, as Kafka's OfflinePartitionsCount), high watermarks of the
// partitions led here, when each replica here started, and the lag of the consumer groups this node
// coordinates.

var (
	partitionsDesc = prometheus.NewDesc("sluice_partitions", "Partition replicas hosted on this broker.", nil, nil)
	leadersDesc    = prometheus.NewDesc("sluice_partition_leaders", "Partitions this broker leads.", nil, nil)
	underRepDesc   = prometheus.NewDesc("sluice_under_replicated_partitions",
		"Partitions led here with fewer in-sync replicas than replicas.", nil, nil)
	underMinIsrDesc = prometheus.NewDesc("sluice_under_min_isr_partitions",
		"Partitions led here with fewer in-sync replicas than min.insync.replicas.", nil, nil)
	offlineDesc = prometheus.NewDesc("sluice_offline_partitions",
		"Partitions without a leader (reported by the controller leader only; 0 elsewhere).", nil, nil)
	hwDesc = prometheus.NewDesc("sluice_partition_high_watermark", "High watermark of each partition led here.",
		[]string{"topic", "partition"}, nil)
	startedDesc = prometheus.NewDesc("sluice_partition_start_time_seconds",
		"When this broker started its replica of each partition it hosts (Unix time; since its own start or the partition's assignment here).",
		[]string{"topic", "partition"}, nil)
	lagDesc = prometheus.NewDesc("sluice_consumer_group_lag",
		"High watermark minus committed offset, for the groups this broker coordinates and the partitions it hosts.",
		[]string{"group", "topic", "partition"}, nil)
	committedDesc = prometheus.NewDesc("sluice_consumer_group_committed_offset",
		"Committed offset of each partition of the groups this broker coordinates.",
		[]string{"group", "topic", "partition"}, nil)
)

// stateCollector is the scrape-time collector of one broker.
type stateCollector struct{ b *Broker }

// RegisterMetrics adds the broker's state gauges to reg (metrics.Registry in `sluice serve`).
func (b *Broker) RegisterMetrics(reg prometheus.Registerer) error {
	return reg.Register(stateCollector{b})
}

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{partitionsDesc, leadersDesc, underRepDesc, underMinIsrDesc, offlineDesc, hwDesc, startedDesc, lagDesc, committedDesc} {
		ch <- d
	}
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	b := c.b
	parts := b.replicas.Partitions()
	var leaders, underRep, underMinIsr int
	for _, p := range parts {
		ch <- prometheus.MustNewConstMetric(startedDesc, prometheus.GaugeValue, float64(p.Started().UnixMicro())/1e6, p.Topic(), itoa(p.Index()))
		if isLeader, _, _ := p.Leader(); !isLeader {
			continue
		}
		leaders++
		ch <- prometheus.MustNewConstMetric(hwDesc, prometheus.GaugeValue, float64(p.HighWatermark()), p.Topic(), itoa(p.Index()))
		pm, ok := b.agent.PartitionMeta(p.Topic(), p.Index())
		if !ok {
			continue
		}
		isr := b.agent.InSyncReplicas(p.Topic(), pm, b.cfg.NodeID)
		if len(isr) < len(pm.Replicas) {
			underRep++
		}
		if len(isr) < p.MinInSyncReplicas() {
			underMinIsr++
		}
	}
	ch <- prometheus.MustNewConstMetric(partitionsDesc, prometheus.GaugeValue, float64(len(parts)))
	ch <- prometheus.MustNewConstMetric(leadersDesc, prometheus.GaugeValue, float64(leaders))
	ch <- prometheus.MustNewConstMetric(underRepDesc, prometheus.GaugeValue, float64(underRep))
	ch <- prometheus.MustNewConstMetric(underMinIsrDesc, prometheus.GaugeValue, float64(underMinIsr))

	offline := 0
	if b.agent.ControllerID() == b.cfg.NodeID {
		for name, t := range b.ctl.Metadata().Topics {
			for _, pm := range t.Partitions {
				if leader, _ := b.agent.PartitionLeader(name, pm); leader < 0 {
					offline++
				}
			}
		}
	}
	ch <- prometheus.MustNewConstMetric(offlineDesc, prometheus.GaugeValue, float64(offline))

	coord := b.coordinator()
	for _, g := range coord.ListGroups(nil) {
		for topic, offsets := range coord.FetchOffsets(g.Group, nil) {
			for partition, o := range offsets {
				if o.Offset < 0 {
					continue
				}
				pl := itoa(partition)
				ch <- prometheus.MustNewConstMetric(committedDesc, prometheus.GaugeValue, float64(o.Offset), g.Group, topic, pl)
				if p, ok := b.replicas.Partition(topic, partition); ok {
					ch <- prometheus.MustNewConstMetric(lagDesc, prometheus.GaugeValue, float64(max(p.HighWatermark()-o.Offset, 0)), g.Group, topic, pl)
				}
			}
		}
	}
}

func itoa(i int32) string { return strconv.Itoa(int(i)) }

// batchRecordCount reads a validated record batch v2 header's record count.
func batchRecordCount(rb []byte) int32 {
	return int32(binary.BigEndian.Uint32(rb[batch.PosRecordCount:]))
}

// countProduced counts one acknowledged batch in its topic's counters.
func countProduced(topic string, rb []byte) {
	t := metrics.ForTopic(topic)
	t.BytesIn.Add(float64(len(rb)))
	t.RecordsIn.Add(float64(batchRecordCount(rb)))
}

// countFetched counts what a fetch response sends, per partition with data, and its errors.
func countFetched(topics []fetchTopic) {
	for i := range topics {
		ft := &topics[i]
		var t *metrics.Topic
		for j := range ft.parts {
			fp := &ft.parts[j]
			if fp.errCode != 0 {
				metrics.PartitionError(fetchKey, fp.errCode)
			}
			if fp.data == nil || fp.data.Size == 0 {
				continue
			}
			if t == nil {
				t = metrics.ForTopic(ft.name)
			}
			t.BytesOut.Add(float64(fp.data.Size))
			t.RecordsOut.Add(float64(fp.data.NextOffset - fp.offset))
		}
	}
}

const (
	produceKey = 0
	fetchKey   = 1
)
