//go:build !(linux || darwin || dragonfly || freebsd || netbsd || openbsd)

package netio

import (
	"errors"
	"net"
)

const gnetSupported = false

func listenGnet(string, *core) (backendServer, net.Addr, error) {
	return nil, nil, errors.New("netio: gnet backend not built on this platform")
}
