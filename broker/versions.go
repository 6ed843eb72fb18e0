package broker

import "github.com/twmb/franz-go/pkg/kmsg"

// apiRange is the version range of one API key that the broker serves completely. A client uses
// min(its max, our max), so a range is advertised only when every version in it works.
type apiRange struct {
	key      int16
	min, max int16
}

// supportedAPIs is what ApiVersions advertises. Caps, with the reason for each:
//   - Produce 3+ and Fetch 4+: record batch v2 only (librdkafka needs these to send v2 batches).
//   - Produce ≤ 12, Fetch ≤ 12: v13 replaces topic names with topic IDs in requests.
//   - Fetch must include 10 (kafka-go picks Fetch only from {2, 5, 10}); Produce must include 7.
//   - ListOffsets ≤ 6: v7 adds the max-timestamp lookup (-3), v8+ tiered storage.
//   - Metadata ≤ 12: topic IDs are filled in; v13 only adds a top-level error code.
//   - Group APIs from v0 (kafka-go sends v0); OffsetCommit/OffsetFetch ≤ 9 (v10 uses topic IDs);
//     FindCoordinator ≤ 4 (v5/v6 are for transactions and share groups); ListGroups ≤ 4.
//   - Transactions as before KIP-890 part 2 (no transaction.version feature is advertised):
//     InitProducerId ≤ 4, AddPartitionsToTxn ≤ 4 (v4 is the batched broker form), EndTxn ≤ 4,
//     TxnOffsetCommit ≤ 3 (v4+ belong to KIP-890), AddOffsetsToTxn ≤ 3, WriteTxnMarkers ≤ 1,
//     ListTransactions ≤ 1 (v2 filters by transactional id pattern).
var supportedAPIs = []apiRange{
	{0, 3, 12}, // Produce
	{1, 4, 12}, // Fetch
	{2, 1, 6},  // ListOffsets
	{3, 0, 12}, // Metadata
	{8, 0, 9},  // OffsetCommit
	{9, 0, 9},  // OffsetFetch
	{10, 0, 4}, // FindCoordinator
	{11, 0, 9}, // JoinGroup
	{12, 0, 4}, // Heartbeat
	{13, 0, 5}, // LeaveGroup
	{14, 0, 5}, // SyncGroup
	{15, 0, 5}, // DescribeGroups
	{16, 0, 4}, // ListGroups
	{18, 0, 4}, // ApiVersions
	{19, 0, 7}, // CreateTopics
	{20, 0, 6}, // DeleteTopics
	{22, 0, 4}, // InitProducerId
	{23, 0, 4}, // OffsetForLeaderEpoch
	{24, 0, 4}, // AddPartitionsToTxn
	{25, 0, 3}, // AddOffsetsToTxn
	{26, 0, 4}, // EndTxn
	{27, 0, 1}, // WriteTxnMarkers
	{28, 0, 3}, // TxnOffsetCommit
	{32, 0, 4}, // DescribeConfigs
	{33, 0, 2}, // AlterConfigs
	{37, 0, 3}, // CreatePartitions
	{42, 0, 2}, // DeleteGroups
	{44, 0, 1}, // IncrementalAlterConfigs
	{45, 0, 0}, // AlterPartitionAssignments (v1 only adds AllowReplicationFactorChange)
	{46, 0, 0}, // ListPartitionReassignments
	{47, 0, 0}, // OffsetDelete
	{60, 0, 1}, // DescribeCluster
	{61, 0, 0}, // DescribeProducers
	{62, 0, 0}, // BrokerRegistration: a broker joining as a controller observer (RAFT listener)
	{65, 0, 0}, // DescribeTransactions
	{66, 0, 1}, // ListTransactions
}

// apiByKey indexes supportedAPIs by key for the request path.
var apiByKey = func() map[int16]apiRange {
	m := make(map[int16]apiRange, len(supportedAPIs))
	for _, a := range supportedAPIs {
		m[a.key] = a
	}
	return m
}()

func apiVersionsKeys() []kmsg.ApiVersionsResponseApiKey {
	keys := make([]kmsg.ApiVersionsResponseApiKey, 0, len(supportedAPIs))
	for _, a := range supportedAPIs {
		k := kmsg.NewApiVersionsResponseApiKey()
		k.ApiKey, k.MinVersion, k.MaxVersion = a.key, a.min, a.max
		keys = append(keys, k)
	}
	return keys
}
