//go:build !linux

package netio

import (
	"fmt"
	"net"
	"runtime"
)

func listenUring(string, *core) (backendServer, net.Addr, error) {
	return nil, nil, fmt.Errorf("netio: backend uring is not supported on %s", runtime.GOOS)
}

// UringAvailable reports why Backend uring cannot run here: io_uring exists on Linux only.
func UringAvailable() error {
	return fmt.Errorf("netio: backend uring is not supported on %s", runtime.GOOS)
}
