package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/sluicebroker/sluice/loadgen/sink"
)

// cmdSink runs the fake broker that acknowledges produce requests without storing them.
func cmdSink(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("loadgen sink", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:9092", "address to listen on")
	quiet := fs.Bool("quiet", false, "no per-second line")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: loadgen sink [-listen ADDR]\n\nA fake broker answering produce requests without storing anything (fetches come back empty):\nrun loadgen against it to measure loadgen's own ceiling (records per loadgen CPU-second).")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	s, err := sink.Listen(*listen)
	if err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "sink listening on", s.Addr())
	if !*quiet {
		go func() {
			t := time.NewTicker(time.Second)
			defer t.Stop()
			var last int64
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					n := s.Records.Load()
					if n != last {
						fmt.Fprintf(os.Stderr, "sink: %d rec/s, %d records\n", n-last, n)
					}
					last = n
				}
			}
		}()
	}
	return s.Serve(ctx)
}
