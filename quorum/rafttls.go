package quorum

import (
	"fmt"
	"os"

	"github.com/lni/dragonboat/v4/config"
)

// RaftTLS names the PEM files of mutual TLS for Raft traffic between brokers (dragonboat's
// NodeHostConfig.MutualTLS): every broker presents CertFile and accepts peers signed by CAFile.
type RaftTLS struct {
	CAFile, CertFile, KeyFile string
}

// Enabled reports whether Raft traffic runs over TLS.
func (t RaftTLS) Enabled() bool { return t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" }

// Check fails when the files are incomplete or unreadable, with what to fix: dragonboat itself
// would only fail deep in its transport.
func (t RaftTLS) Check() error {
	if !t.Enabled() {
		return nil
	}
	for _, f := range []struct{ flag, path string }{{"ca", t.CAFile}, {"cert", t.CertFile}, {"key", t.KeyFile}} {
		if f.path == "" {
			return fmt.Errorf("raft TLS needs its %s file too (--raft-tls-ca, --raft-tls-cert, --raft-tls-key)", f.flag)
		}
		if _, err := os.Stat(f.path); err != nil {
			return fmt.Errorf("raft TLS %s file: %w", f.flag, err)
		}
	}
	return nil
}

func (t RaftTLS) apply(nhc *config.NodeHostConfig) {
	if !t.Enabled() {
		return
	}
	nhc.MutualTLS = true
	nhc.CAFile, nhc.CertFile, nhc.KeyFile = t.CAFile, t.CertFile, t.KeyFile
}
