package broker

import (
	"net"
	"strconv"
	"time"
)

// The broker configs that admin tools read to learn what they talk to (kafbat-ui, Cruise Control,
// kafka-configs.sh --describe --broker): versions, directories, listeners and the defaults that
// matter to clients, each with the value Sluice actually applies.

// interBrokerProtocolVersion is the Kafka release whose protocol Sluice's API versions match best
// (KRaft mode: no ZooKeeper).
const interBrokerProtocolVersion = "3.9-IV0"

func (b *Broker) addToolBrokerConfigs(kv map[string]string) {
	listener := "PLAINTEXT://" + net.JoinHostPort(b.cfg.Host, strconv.Itoa(int(b.cfg.Port)))
	txnMax := b.cfg.TransactionMaxTimeout
	if txnMax <= 0 {
		txnMax = 15 * time.Minute
	}
	offsetsRetention := b.cfg.OffsetsRetention
	if offsetsRetention <= 0 {
		offsetsRetention = 7 * 24 * time.Hour
	}
	for k, v := range map[string]string{
		"inter.broker.protocol.version":             interBrokerProtocolVersion,
		"log.message.format.version":                "3.0-IV1",
		"log.dirs":                                  b.cfg.LogDir,
		"log.dir":                                   b.cfg.LogDir,
		"node.id":                                   strconv.Itoa(int(b.cfg.NodeID)),
		"process.roles":                             "broker,controller",
		"listeners":                                 listener,
		"advertised.listeners":                      listener,
		"broker.rack":                               b.cfg.Rack,
		"offsets.topic.num.partitions":              strconv.Itoa(offsetsPartitions),
		"transaction.state.log.num.partitions":      strconv.Itoa(txnPartitions),
		"offsets.retention.minutes":                 strconv.FormatInt(int64(offsetsRetention/time.Minute), 10),
		"transaction.max.timeout.ms":                strconv.FormatInt(txnMax.Milliseconds(), 10),
		"min.insync.replicas":                       "1",
		"log.cleanup.policy":                        "delete",
		"compression.type":                          "producer",
		"unclean.leader.election.enable":            "false",
		"auto.leader.rebalance.enable":              "true",
		"delete.topic.enable":                       "true",
		"log.roll.ms":                               msString(b.cfg.Log.SegmentAge),
		"max.incremental.fetch.session.cache.slots": strconv.Itoa(max(b.sessions.slots, 0)),
	} {
		if v != "" {
			kv[k] = v
		}
	}
}
