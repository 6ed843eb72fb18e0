package broker

import (
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/sluicebroker/sluice/internal/fdcache"
)

// A partition replica holds 1 file open for good, its active segment's data, one more per extra
// segment; its index files are open only while a Sync writes them, and its Raft metadata file shares
// a bounded cache of descriptors (internal/fdcache) with the other partitions'. 2 leaves room for a
// roll; the cache's room to grow is kept aside. A broker past its open files limit cannot open a
// partition's files: dragonboat panics, and the restart, which opens them all again, panics too.
// So creating partitions is refused (POLICY_VIOLATION, as Kafka refuses a request with too many
// partitions) when they would not fit under the limit with a reserve for connections and rolls.
const filesPerPartition = 2

// errFileLimit says why partitions were refused.
type errFileLimit struct{ open, need, reserve, limit int }

func (e *errFileLimit) Error() string {
	return fmt.Sprintf("these partitions need ~%d more open files here, on top of %d open and %d kept for connections and cached files; "+
		"the broker's open files limit is %d (raise ulimit -n / LimitNOFILE)", e.need, e.open, e.reserve, e.limit)
}

func (e *errFileLimit) Unwrap() error { return kerr.PolicyViolation }

// admitPartitionFiles refuses creating count partition replicas here if their files would not fit
// under the open files limit. It counts the descriptors open now: creating topics is rare.
func admitPartitionFiles(count int) error {
	if count <= 0 {
		return nil
	}
	limit, open, ok := fileUsage()
	if !ok {
		return nil
	}
	reserve := max(64, limit/8) + fdcache.Default().Headroom()
	need := count * filesPerPartition
	if open+need+reserve > limit {
		return &errFileLimit{open: open, need: need, reserve: reserve, limit: limit}
	}
	return nil
}
