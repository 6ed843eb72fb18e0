package main

import (
	"context"
	"fmt"
	"hash/fnv"
	"log"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Checking the run: the records' values (what was produced where), reading every partition back, and
// comparing the final log with what was acknowledged.

// key identifies one produced record: producer, partition and that producer's sequence number
// within the partition (1, 2, 3, ...). Every value starts with it, so the final log can be
// checked without keeping values around.
type key struct {
	prod uint16
	part int32
	seq  uint32
}

func encodeValue(k key, size int) []byte {
	b := fmt.Appendf(nil, "%d/%d/%d/", k.prod, k.part, k.seq)
	for len(b) < size {
		b = append(b, '.')
	}
	return b
}

func decodeValue(v []byte) (key, bool) {
	f := strings.SplitN(string(v[:min(len(v), 40)]), "/", 4)
	if len(f) < 4 {
		return key{}, false
	}
	prod, e1 := strconv.ParseUint(f[0], 10, 16)
	part, e2 := strconv.ParseInt(f[1], 10, 32)
	seq, e3 := strconv.ParseUint(f[2], 10, 32)
	if e1 != nil || e2 != nil || e3 != nil {
		return key{}, false
	}
	return key{uint16(prod), int32(part), uint32(seq)}, true
}

func hashValue(v []byte) uint64 {
	h := fnv.New64a()
	h.Write(v)
	return h.Sum64()
}

// finalLog is every partition as read back at the end.
type finalLog struct {
	keys []map[int64]key
	hash []map[int64]uint64
	bad  []string
}

func readAll(adm *kadm.Client, c *cluster, cfg config) (*finalLog, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var ends map[int32]int64
	for {
		lctx, lcancel := context.WithTimeout(ctx, 5*time.Second)
		lo, err := adm.ListEndOffsets(lctx, cfg.topic)
		lcancel()
		if err == nil && lo.Error() == nil {
			ends = map[int32]int64{}
			lo.Each(func(o kadm.ListedOffset) { ends[o.Partition] = o.Offset })
			if len(ends) == cfg.partitions {
				break
			}
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("list end offsets: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	offsets := map[int32]kgo.Offset{}
	for p := range cfg.partitions {
		offsets[int32(p)] = kgo.NewOffset().AtStart()
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.addrs()...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{cfg.topic: offsets}),
		kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	fl := &finalLog{}
	next := make([]int64, cfg.partitions)
	for range cfg.partitions {
		fl.keys = append(fl.keys, map[int64]key{})
		fl.hash = append(fl.hash, map[int64]uint64{})
	}
	done := func() bool {
		for p := range cfg.partitions {
			if next[p] < ends[int32(p)] {
				return false
			}
		}
		return true
	}
	for !done() {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil, fmt.Errorf("reading back: stuck at %v, end offsets %v", next, ends)
		}
		fs.EachError(func(t string, p int32, err error) { log.Printf("read back %s/%d: %v", t, p, err) })
		fs.EachRecord(func(rec *kgo.Record) {
			p := rec.Partition
			if rec.Offset >= ends[p] {
				return // produced after the end offsets were listed (cannot happen: producers stopped)
			}
			if k, ok := decodeValue(rec.Value); ok {
				fl.keys[p][rec.Offset] = k
			} else {
				fl.bad = append(fl.bad, fmt.Sprintf("partition %d offset %d: %q", p, rec.Offset, rec.Value[:min(len(rec.Value), 40)]))
			}
			fl.hash[p][rec.Offset] = hashValue(rec.Value)
			next[p] = rec.Offset + 1
		})
	}
	return fl, nil
}

// verify compares the acknowledged records with the final log.
func verify(sum *chaosSummary, acks map[key]int64, fl *finalLog, cfg config) {
	example := func(format string, args ...any) {
		if len(sum.Examples) < 20 {
			sum.Examples = append(sum.Examples, fmt.Sprintf(format, args...))
		}
	}
	sum.Invalid = int64(len(fl.bad))
	for _, b := range fl.bad {
		example("invalid value: %s", b)
	}
	where := map[key][]int64{}
	for p := range cfg.partitions {
		offs := make([]int64, 0, len(fl.keys[p]))
		for off := range fl.keys[p] {
			offs = append(offs, off)
		}
		sort.Slice(offs, func(i, j int) bool { return offs[i] < offs[j] })
		sum.PerPartition[p].LogRecords = int64(len(offs))
		sum.LogRecords += int64(len(offs))
		lastSeq := map[uint16]uint32{}
		for _, off := range offs {
			k := fl.keys[p][off]
			where[k] = append(where[k], off)
			if k.part != int32(p) {
				sum.Invalid++
				example("record %v in partition %d at offset %d", k, p, off)
			}
			if k.seq < lastSeq[k.prod] {
				sum.Reordered++
				example("reordered: partition %d offset %d: producer %d seq %d after seq %d", p, off, k.prod, k.seq, lastSeq[k.prod])
			}
			lastSeq[k.prod] = max(lastSeq[k.prod], k.seq)
		}
	}
	for k, offs := range where {
		if len(offs) > 1 {
			sum.Duplicated += int64(len(offs) - 1)
			example("duplicated: producer %d partition %d seq %d at offsets %v", k.prod, k.part, k.seq, offs)
		}
		if _, ok := acks[k]; !ok {
			sum.UnackedPresent++
		}
	}
	for k, off := range acks {
		got, ok := fl.keys[k.part][off]
		if ok && got == k {
			continue
		}
		sum.Lost++
		if offs := where[k]; len(offs) > 0 {
			sum.LostMoved++
			example("lost: producer %d partition %d seq %d acknowledged at offset %d, found at %v", k.prod, k.part, k.seq, off, offs)
		} else {
			sum.LostMissing++
			example("lost: producer %d partition %d seq %d acknowledged at offset %d, absent (offset holds %v: %v)", k.prod, k.part, k.seq, off, ok, got)
		}
	}
}
