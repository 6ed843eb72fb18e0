// Command fsyncfloor measures the disk's own floor under a durable broker's acknowledgements: FILES
// files (partitions) each get a SIZE-byte write and an fdatasync side by side, as one Raft save of
// that many partitions does, once a millisecond, for DURATION; it prints the percentiles of the
// whole round. No broker can acknowledge faster than this; bench/latency.sh runs it first so the
// broker's tail can be read against the device's.
//
//	go run ./bench/fsyncfloor -dir /data/tmp -files 8 -size 2048 -duration 10s
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/sluicebroker/sluice/internal/diskio"
)

func main() {
	dir := flag.String("dir", os.TempDir(), "directory on the disk to measure (files are created and removed)")
	files := flag.Int("files", 8, "files written and fdatasynced side by side per round")
	size := flag.Int("size", 2048, "bytes written to each file per round")
	duration := flag.Duration("duration", 10*time.Second, "how long to measure")
	prealloc := flag.Int64("prealloc", 64<<20, "bytes preallocated (fallocate) per file, as segments are")
	flag.Parse()
	if err := run(*dir, *files, *size, *duration, *prealloc); err != nil {
		fmt.Fprintln(os.Stderr, "fsyncfloor:", err)
		os.Exit(1)
	}
}

func run(dir string, n, size int, duration time.Duration, prealloc int64) error {
	if n < 1 || size < 1 {
		return fmt.Errorf("-files and -size must be at least 1")
	}
	tmp, err := os.MkdirTemp(dir, "fsyncfloor-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	fs := make([]*os.File, n)
	for i := range fs {
		f, err := os.Create(filepath.Join(tmp, fmt.Sprintf("f%d", i)))
		if err != nil {
			return err
		}
		defer f.Close()
		if err := diskio.Preallocate(f, prealloc); err != nil {
			return err
		}
		fs[i] = f
	}
	buf := make([]byte, size)
	errs := make([]error, n)
	var lat []time.Duration
	var off int64
	for end := time.Now().Add(duration); time.Now().Before(end); {
		start := time.Now()
		var wg sync.WaitGroup
		for i, f := range fs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := f.WriteAt(buf, off); err != nil {
					errs[i] = err
					return
				}
				errs[i] = diskio.Datasync(f)
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				return err
			}
		}
		lat = append(lat, time.Since(start))
		if off += int64(size); off+int64(size) > prealloc {
			off = 0
		}
		time.Sleep(time.Millisecond)
	}
	slices.Sort(lat)
	q := func(p float64) float64 {
		return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000
	}
	fmt.Printf("fsync floor: %d files x %d B write + fdatasync side by side, %d rounds in %s: p50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f  max %.2f ms\n",
		n, size, len(lat), duration, q(.5), q(.9), q(.99), q(.999), q(1))
	return nil
}
