package replica

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// A partition directory records the Raft shard it belongs to, like Kafka's
// partition.metadata records the topic id: a topic deleted while this node was
// down and recreated under the same name gets a new shard, and its old files
// must not be taken for the new partition's (the state machine would resume
// from a foreign checkpoint).
const shardFile = "shard.id"

// readShardID returns the shard recorded in dir; ok is false when there is none.
func readShardID(dir string) (id uint64, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(dir, shardFile))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	id, err = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("replica: %s: bad %s: %w", dir, shardFile, err)
	}
	return id, true, nil
}

// claimDir makes dir belong to shard: files of another shard are removed, and
// the shard id is written durably before any segment is created.
func claimDir(dir string, shard uint64) error {
	id, ok, err := readShardID(dir)
	if err != nil {
		return err
	}
	if ok && id == shard {
		return nil
	}
	if ok {
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, shardFile))
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(f, "%d\n", shard); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	return syncDir(filepath.Dir(dir))
}
