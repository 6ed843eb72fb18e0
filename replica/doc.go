// Package replica hosts this node's partitions. Each partition is a Raft group
// (quorum) whose on-disk state machine applies committed produce commands to
// the partition's segment log: it assigns offsets (deterministically, from the
// log, so every replica agrees), enforces idempotent-producer sequences, and
// advances the high watermark that wakes waiting fetches. The Manager starts,
// reconfigures and deletes partitions as the cluster metadata changes, and
// runs retention.
//
// Durability: a produce is acknowledged once its Raft entry is committed (and
// fsynced in the Raft log) and applied. The segment log is fsynced only when
// dragonboat asks the state machine to Sync (before each local snapshot and on
// close), together with a checkpoint of the applied index, the log end and the
// producer state; after a crash the log is cut back to the checkpoint and Raft
// re-delivers every later entry.
package replica
