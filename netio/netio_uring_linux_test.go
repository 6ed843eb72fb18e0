package netio

import (
	"errors"
	"strings"
	"testing"

	"github.com/sluicebroker/sluice/netio/internal/uring"
	"golang.org/x/sys/unix"
)

// Every table-driven test also runs over io_uring where the kernel allows it.
func init() {
	if UringAvailable() == nil {
		backends = append(backends, BackendUring)
	}
}

// Where io_uring cannot be set up (disabled by sysctl, an old kernel, seccomp), Backend uring fails
// with a clear error and auto is unaffected.
func TestUringUnavailable(t *testing.T) {
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
	s, err = Listen("127.0.0.1:0", newTestHandler(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Backend() != BackendGnet {
		t.Fatalf("auto chose %s", s.Backend())
	}
}
