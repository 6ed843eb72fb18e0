package netio

import (
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/sluicebroker/sluice/internal/uring"
	"golang.org/x/sys/unix"
)

// Every table-driven test also runs over io_uring where the kernel allows it.
func init() {
	if UringAvailable() == nil {
		backends = append(backends, BackendUring)
	}
}

// Where io_uring cannot be set up (disabled by sysctl, an old kernel, seccomp), Backend uring fails
// with a clear error and auto falls back to gnet, saying so in exactly one log line.
func TestUringUnavailable(t *testing.T) {
	savedPref := autoPrefersUring
	autoPrefersUring = true
	defer func() { autoPrefersUring = savedPref }()
	saved := uringSetup
	uringSetup = func() (*uring.Ring, error) {
		return nil, errors.Join(uring.ErrUnsupported, unix.EPERM)
	}
	defer func() { uringSetup = saved }()
	s, err := Listen("127.0.0.1:0", newTestHandler(t), Options{Backend: BackendUring})
	if err == nil {
		s.Close()
		t.Fatal("Listen with io_uring unavailable succeeded")
	}
	if !strings.Contains(err.Error(), "io_uring") || !errors.Is(err, unix.EPERM) {
		t.Fatalf("unclear error: %v", err)
	}
	logs := &logBuffer{}
	s, err = Listen("127.0.0.1:0", newTestHandler(t), Options{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Backend() != BackendGnet {
		t.Fatalf("auto chose %s", s.Backend())
	}
	out := logs.String()
	if n := strings.Count(out, "\n"); n != 1 || !strings.Contains(out, "io_uring unavailable") || !strings.Contains(out, "EPERM") && !strings.Contains(out, "operation not permitted") {
		t.Fatalf("want exactly one log line naming the fallback and its cause, got %d:\n%s", n, out)
	}
	c := dial(t, s)
	c.send(frame(1, opEcho, []byte("after fallback")))
	c.expect(1, []byte("after fallback"))
}

// With io_uring available and preferred, auto runs it and logs nothing about it.
func TestAutoPicksUring(t *testing.T) {
	if err := UringAvailable(); err != nil {
		t.Skipf("io_uring unavailable here: %v", err)
	}
	savedPref := autoPrefersUring
	autoPrefersUring = true
	defer func() { autoPrefersUring = savedPref }()
	logs := &logBuffer{}
	s, err := Listen("127.0.0.1:0", newTestHandler(t), Options{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Backend() != BackendUring || logs.String() != "" {
		t.Fatalf("auto chose %s, logged %q", s.Backend(), logs.String())
	}
}

// With one provided buffer per loop, receives keep finding the ring empty (ENOBUFS) and must be posted
// again once buffers return; paused connections keep their unparsed bytes out of the ring.
func TestUringFewProvidedBuffers(t *testing.T) {
	if err := UringAvailable(); err != nil {
		t.Skipf("io_uring unavailable here: %v", err)
	}
	savedCount, savedBackends := uringBufCount, backends
	uringBufCount, backends = 1, []Backend{BackendUring}
	defer func() { uringBufCount, backends = savedCount, savedBackends }()
	before := uringStarved.Load()
	t.Run("ManyConnections", TestManyConnections)
	t.Run("BackPressure", TestBackPressure)
	t.Run("RandomizedTraffic", TestRandomizedTraffic)
	t.Logf("%d receives found no buffer", uringStarved.Load()-before)
}

// The ring-only write path (uringSend "ring", for comparison builds) passes the same traffic tests.
func TestUringRingSend(t *testing.T) {
	if err := UringAvailable(); err != nil {
		t.Skipf("io_uring unavailable here: %v", err)
	}
	savedSend, savedBackends := uringSend, backends
	uringSend, backends = "ring", []Backend{BackendUring}
	defer func() { uringSend, backends = savedSend, savedBackends }()
	t.Run("ManyConnections", TestManyConnections)
	t.Run("BackPressureReachesClient", TestBackPressureReachesClient)
	t.Run("RandomizedTraffic", TestRandomizedTraffic)
	t.Run("FileRangeSlowReader", TestFileRangeSlowReader)
}

// With rings far smaller than the connections (8 submission entries, 16 completions, 4 provided
// buffers), submissions fill the queue mid-batch, completions overflow into the kernel's list and a
// multishot accept may end for lack of room: churn and busy connections must still all be served.
func TestUringTinyRings(t *testing.T) {
	if err := UringAvailable(); err != nil {
		t.Skipf("io_uring unavailable here: %v", err)
	}
	savedSetup, savedCount, savedBackends := uringSetup, uringBufCount, backends
	uringSetup = func() (*uring.Ring, error) {
		r, err := uring.NewFlags(8, 16, uring.SetupCoopTaskrun)
		if err != nil {
			return nil, err
		}
		return r, r.Supports(uringOps...)
	}
	uringBufCount, backends = 4, []Backend{BackendUring}
	defer func() { uringSetup, uringBufCount, backends = savedSetup, savedCount, savedBackends }()
	t.Run("ConnectionChurn", TestConnectionChurn)
	t.Run("ManyConnections", TestManyConnections)
	t.Run("RandomizedTraffic", TestRandomizedTraffic)
}
