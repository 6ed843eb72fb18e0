package quorum

import "time"

// defaultSyncTimeout bounds a synchronous call whose ctx has no deadline.
const defaultSyncTimeout = 30 * time.Second

// ControllerShardID is the Raft shard holding cluster metadata.
const ControllerShardID uint64 = 1

// FirstPartitionShardID is the first shard id given to a partition; ids increase from here and
// are never reused (dragonboat forbids restarting a removed replica id).
const FirstPartitionShardID uint64 = 1000
