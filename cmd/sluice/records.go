package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// headerFlags collects repeated -H name=value flags.
type headerFlags []kgo.RecordHeader

func (h *headerFlags) String() string { return fmt.Sprint(len(*h), " headers") }

func (h *headerFlags) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("header %q: want name=value", v)
	}
	*h = append(*h, kgo.RecordHeader{Key: k, Value: []byte(val)})
	return nil
}

// produceCmd is `sluice produce TOPIC`: one record per line of in, acks=all, idempotent; with
// -key-separator each line is KEY<sep>VALUE.
func produceCmd(args []string, in io.Reader, out io.Writer) error {
	fs := flag.NewFlagSet("produce", flag.ContinueOnError)
	var a adminFlags
	a.register(fs)
	keySep := fs.String("key-separator", "", "split each line at the first SEP into key and value (empty: no key)")
	partition := fs.Int("partition", -1, "write to this partition (-1: by key, or spread)")
	var headers headerFlags
	fs.Var(&headers, "H", "a header name=value on every record (repeatable)")
	topic, err := parseWithTopic(fs, args)
	if err != nil {
		return err
	}
	opts := []kgo.Opt{kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(5 * time.Millisecond), kgo.AllowAutoTopicCreation()}
	if *partition >= 0 {
		opts = append(opts, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	}
	cl, err := a.client(opts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), a.timeout)
	defer cancel()

	var produced, failed int
	var firstErr error
	done := func(_ *kgo.Record, err error) {
		if err != nil {
			failed++
			if firstErr == nil {
				firstErr = err
			}
			return
		}
		produced++
	}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		r := &kgo.Record{Value: []byte(line), Headers: headers, Partition: int32(*partition)}
		if *keySep != "" {
			if k, v, ok := strings.Cut(line, *keySep); ok {
				r.Key, r.Value = []byte(k), []byte(v)
			}
		}
		cl.Produce(ctx, r, func(r *kgo.Record, err error) { done(r, err) })
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if err := cl.Flush(ctx); err != nil {
		return err
	}
	if a.asJSON {
		return writeJSON(out, map[string]any{"topic": topic, "produced": produced, "failed": failed})
	}
	fmt.Fprintf(out, "produced %d records to %s\n", produced, topic)
	if firstErr != nil {
		return fmt.Errorf("%d records failed: %w", failed, firstErr)
	}
	return nil
}

// consumedRecord is one record as `sluice consume --json` prints it.
type consumedRecord struct {
	Partition int32             `json:"partition"`
	Offset    int64             `json:"offset"`
	Timestamp time.Time         `json:"timestamp"`
	Key       *string           `json:"key"`
	Value     *string           `json:"value"`
	Headers   map[string]string `json:"headers,omitempty"`
}

// consumeCmd is `sluice consume TOPIC`: prints records from the start (or -offset end), one per line,
// until -n records or, with -e, the end of every partition as it was when it started.
func consumeCmd(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("consume", flag.ContinueOnError)
	var a adminFlags
	a.register(fs)
	from := fs.String("offset", "beginning", "where to start: beginning, end, or an offset (on every partition)")
	limit := fs.Int("n", 0, "stop after this many records (0: no limit)")
	exitAtEnd := fs.Bool("e", false, "stop at the end of every partition (its high watermark when consume starts)")
	topic, err := parseWithTopic(fs, args)
	if err != nil {
		return err
	}
	start := kgo.NewOffset().AtStart()
	switch *from {
	case "beginning":
	case "end":
		start = kgo.NewOffset().AtEnd()
	default:
		n, err := strconv.ParseInt(*from, 10, 64)
		if err != nil || n < 0 {
			return fmt.Errorf("-offset %q: want beginning, end or an offset", *from)
		}
		start = kgo.NewOffset().At(n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), a.timeout)
	defer cancel()
	// The end of each partition, for -e.
	var ends map[int32]int64
	if *exitAtEnd {
		admCl, err := a.client()
		if err != nil {
			return err
		}
		offs, err := kadm.NewClient(admCl).ListEndOffsets(ctx, topic)
		admCl.Close()
		if err != nil {
			return err
		}
		if err := offs.Error(); err != nil {
			return err
		}
		ends = map[int32]int64{}
		offs.Each(func(o kadm.ListedOffset) {
			if o.Offset > 0 {
				ends[o.Partition] = o.Offset
			}
		})
	}
	cl, err := a.client(kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(start))
	if err != nil {
		return err
	}
	defer cl.Close()
	seen := 0
	done := func() bool {
		return *limit > 0 && seen >= *limit || *exitAtEnd && len(ends) == 0
	}
	for !done() {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			if errors.Is(err, context.DeadlineExceeded) && !*exitAtEnd && *limit == 0 {
				return nil // followed until -timeout
			}
			return fmt.Errorf("after %d records: %w", seen, err)
		}
		if err := fetches.Err0(); err != nil {
			return err
		}
		for it := fetches.RecordIter(); !it.Done() && !done(); {
			r := it.Next()
			if err := printRecord(out, r, a.asJSON); err != nil {
				return err
			}
			seen++
			if end, ok := ends[r.Partition]; ok && r.Offset+1 >= end {
				delete(ends, r.Partition)
			}
		}
	}
	return nil
}

func printRecord(out io.Writer, r *kgo.Record, asJSON bool) error {
	if asJSON {
		cr := consumedRecord{Partition: r.Partition, Offset: r.Offset, Timestamp: r.Timestamp}
		if r.Key != nil {
			k := string(r.Key)
			cr.Key = &k
		}
		if r.Value != nil {
			v := string(r.Value)
			cr.Value = &v
		}
		if len(r.Headers) > 0 {
			cr.Headers = map[string]string{}
			for _, h := range r.Headers {
				cr.Headers[h.Key] = string(h.Value)
			}
		}
		return writeJSON(out, cr)
	}
	var hs []string
	for _, h := range r.Headers {
		hs = append(hs, h.Key+"="+string(h.Value))
	}
	_, err := fmt.Fprintf(out, "%d\t%d\t%s\t%s\t%s\n", r.Partition, r.Offset, r.Key, r.Value, strings.Join(hs, ","))
	return err
}

// parseWithTopic parses flags that may come before or after the one positional argument, the topic.
func parseWithTopic(fs *flag.FlagSet, args []string) (string, error) {
	if err := fs.Parse(reorderFlags(fs, args)); err != nil {
		return "", err
	}
	if fs.NArg() != 1 {
		return "", fmt.Errorf("want one topic, got %v", fs.Args())
	}
	return fs.Arg(0), nil
}
