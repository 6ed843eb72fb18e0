// Package segment is one partition's on-disk log: Kafka record batches v2 stored byte for byte in
// preallocated segment files, with sparse offset and time indexes, crash recovery, truncation,
// retention, a "last applied" checkpoint for the Raft state machine above, and file ranges for
// zero-copy reads.
//
// A log is a directory, laid out as Kafka's:
//
//	00000000000000000000.log        batches, back to back; preallocated while active
//	00000000000000000000.index      sparse offset index: (offset - base u32, position u32)
//	00000000000000000000.timeindex  time index: (largest timestamp before that point i64, offset - base u32)
//	00000000000000000000.indexsum   entry count and CRCs vouching for the two index files
//	checkpoint.0, checkpoint.1      the checkpoint, in two alternating CRC-protected slots
//
// Files: batch.go (v2 header, validation), log.go (the Log: open, append, sync, truncation,
// retention), read.go (reads and ReadResult), index.go (index files and when they are trusted),
// recover.go and scan.go (recovery), checkpoint.go, segment.go (one segment's state).
//
// Concurrency: one goroutine appends; Sync, TruncateTo and EnforceRetention may come from others
// and are serialized with it; any number of goroutines read. Readers see only whole batches below
// the end published by the last Append.
package segment
