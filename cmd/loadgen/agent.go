package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"

	"github.com/sluicebroker/sluice/loadgen"
)

// cmdAgent serves runs for a coordinator (loadgen run -agents).
func cmdAgent(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("loadgen agent", flag.ContinueOnError)
	listen := fs.String("listen", ":7070", "address the coordinator reaches this agent on")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: loadgen agent [-listen ADDR]\n\nRuns its share of a distributed run for `loadgen run -agents host:port,...` (HTTP, no authentication:\nlisten on a network only the load machines reach).")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "loadgen agent listening on", ln.Addr())
	return loadgen.ServeAgent(ctx, ln)
}
