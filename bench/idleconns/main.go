// Command idleconns measures what idle connections cost a broker: it opens -conns TCP connections to
// -addr, sends one ApiVersions request on each and reads the answer, leaves them idle, and reports
// the broker's resident memory (VmRSS of -pid, from /proc) before and after, per connection.
//
//	idleconns -addr 127.0.0.1:32000 -pid 1234 -conns 10000
package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9092", "broker address")
	pid := flag.Int("pid", 0, "broker process id (its /proc/<pid>/status is read)")
	conns := flag.Int("conns", 10000, "connections to hold")
	settle := flag.Duration("settle", 3*time.Second, "wait after the last answer before reading memory")
	label := flag.String("label", "", "printed in front of the result")
	flag.Parse()
	if *pid == 0 {
		fail(fmt.Errorf("-pid is required"))
	}
	// Every connection is a descriptor here too.
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < uint64(*conns)+100 {
		lim.Cur = min(lim.Max, uint64(*conns)+100)
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}

	time.Sleep(*settle)
	before := rssKiB(*pid)
	held := make([]net.Conn, *conns)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	const workers = 32 // dialling 10,000 at once overflows the listen backlog
	for w := range workers {
		wg.Go(func() {
			for i := w; i < *conns; i += workers {
				c, err := apiVersions(*addr, int32(i))
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
				held[i] = c
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		fail(fmt.Errorf("%d workers failed, first: %v", len(errs), errs[0]))
	}
	time.Sleep(*settle)
	after := rssKiB(*pid)
	fmt.Printf("%sconnections %d  broker RSS before %d KiB, after %d KiB  => %.1f KiB per connection\n",
		*label, *conns, before, after, float64(after-before)/float64(*conns))
	for _, c := range held {
		_ = c.Close()
	}
}

// apiVersions dials, sends ApiVersions v0 and reads the answer; the connection stays open.
func apiVersions(addr string, corr int32) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 30*time.Second)
	if err != nil {
		return nil, err
	}
	// size, api key 18, version 0, correlation id, client id null.
	var req [14]byte
	binary.BigEndian.PutUint32(req[0:], 10)
	binary.BigEndian.PutUint16(req[4:], 18)
	binary.BigEndian.PutUint32(req[8:], uint32(corr))
	binary.BigEndian.PutUint16(req[12:], 0xffff)
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write(req[:]); err != nil {
		c.Close()
		return nil, err
	}
	var hdr [8]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		c.Close()
		return nil, fmt.Errorf("ApiVersions answer: %w", err)
	}
	if got := int32(binary.BigEndian.Uint32(hdr[4:])); got != corr {
		c.Close()
		return nil, fmt.Errorf("correlation id %d, want %d", got, corr)
	}
	if _, err := io.CopyN(io.Discard, c, int64(binary.BigEndian.Uint32(hdr[:]))-4); err != nil {
		c.Close()
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

func rssKiB(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		fail(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				fail(err)
			}
			return n
		}
	}
	fail(fmt.Errorf("no VmRSS for pid %d", pid))
	return 0
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "idleconns:", err)
	os.Exit(1)
}
