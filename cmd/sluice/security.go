package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicebroker/sluice/broker"
	"github.com/sluicebroker/sluice/netio"
	"github.com/sluicebroker/sluice/quorum"
)

// securityFlags are the TLS, SASL, ACL and Raft TLS settings of `sluice serve`.
type securityFlags struct {
	tlsListen, tlsCert, tlsKey, tlsClientCA   string
	saslListen                                string
	saslMechanisms, superUsers, bootstrapUser string
	authorizer                                string
	allowEveryoneIfNoACL                      bool
	reauthMax                                 time.Duration
	raftTLSCert, raftTLSKey, raftTLSCA        string
}

func addSecurityFlags(fs *flag.FlagSet, s *securityFlags) {
	fs.StringVar(&s.tlsListen, "tls-listen", "", "TLS Kafka listener address beside --listen (SSL, or SASL_SSL with --sasl-mechanisms); served by the std netio backend (crypto/tls)")
	fs.StringVar(&s.tlsCert, "tls-cert", "", "PEM certificate chain of the TLS listener")
	fs.StringVar(&s.tlsKey, "tls-key", "", "PEM private key of the TLS listener (should not be readable by group or others)")
	fs.StringVar(&s.tlsClientCA, "tls-client-ca", "", "PEM CA bundle: require and verify client certificates on the TLS listener (mutual TLS); the principal is User:<subject>, e.g. User:CN=alice")
	fs.StringVar(&s.saslListen, "sasl-listen", "", "SASL_PLAINTEXT Kafka listener address beside --listen (needs --sasl-mechanisms); with it --listen is PLAINTEXT, without SASL, "+
		"as Kafka's listeners PLAINTEXT://:9092,SASL_PLAINTEXT://:9093")
	fs.StringVar(&s.saslMechanisms, "sasl-mechanisms", "", "SASL mechanisms, comma separated: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (empty: no SASL); required on every listener, "+
		"or with --sasl-listen on it and the TLS listener only")
	fs.StringVar(&s.superUsers, "super-users", "", "principals that bypass ACLs, User:NAME,... (super.users); the bootstrap user is one too")
	fs.StringVar(&s.bootstrapUser, "sasl-bootstrap-user", "", "NAME:PASSWORD_FILE: create SCRAM-SHA-256 and -512 credentials for NAME at start when it has none; "+
		"the broker also authenticates to other brokers as NAME (inter-broker requests)")
	fs.StringVar(&s.authorizer, "authorizer", "none", "none (every request allowed) or acl (ACLs enforced; no matching ACL denies)")
	fs.BoolVar(&s.allowEveryoneIfNoACL, "allow-everyone-if-no-acl-found", false, "with --authorizer acl: a resource no ACL applies to is open to everyone (allow.everyone.if.no.acl.found=true); default: no matching ACL denies")
	fs.DurationVar(&s.reauthMax, "connections-max-reauth", 0, "SASL sessions last this long, then clients re-authenticate on their connection or it closes (connections.max.reauth.ms, KIP-368); 0 = forever")
	fs.StringVar(&s.raftTLSCert, "raft-tls-cert", "", "PEM certificate for Raft traffic between brokers (mutual TLS; needs --raft-tls-key and --raft-tls-ca)")
	fs.StringVar(&s.raftTLSKey, "raft-tls-key", "", "PEM private key for Raft mutual TLS")
	fs.StringVar(&s.raftTLSCA, "raft-tls-ca", "", "PEM CA that signs every broker's Raft certificate")
}

// securitySetup is what the flags resolve to.
type securitySetup struct {
	tls        *tls.Config // the TLS listener's; nil without --tls-listen
	tlsPort    int32
	saslPort   int32                  // the SASL_PLAINTEXT listener's; 0 without --sasl-listen
	broker     *broker.SecurityConfig // nil: no SASL, no ACLs, no TLS listener
	user, pass string                 // the bootstrap user
	raft       quorum.RaftTLS
}

// resolve checks the flags and reads the files they name.
func (s securityFlags) resolve(logger *slog.Logger, listen string) (*securitySetup, error) {
	tlsOnly := listen == ""
	if tlsOnly && s.tlsListen == "" {
		return nil, errors.New("--listen is empty and there is no --tls-listen: nothing to serve")
	}
	out := &securitySetup{raft: quorum.RaftTLS{CAFile: s.raftTLSCA, CertFile: s.raftTLSCert, KeyFile: s.raftTLSKey}}
	if err := out.raft.Check(); err != nil {
		return nil, err
	}
	if out.raft.Enabled() {
		warnReadable(logger, out.raft.KeyFile, "--raft-tls-key")
	}
	var bc broker.SecurityConfig
	used := false
	for _, m := range splitList(s.saslMechanisms) {
		m = strings.ToUpper(m)
		if !broker.ValidMechanism(m) {
			return nil, fmt.Errorf("--sasl-mechanisms: unknown mechanism %q (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)", m)
		}
		bc.Mechanisms = append(bc.Mechanisms, m)
		used = true
	}
	if s.reauthMax < 0 {
		return nil, errors.New("--connections-max-reauth must not be negative")
	}
	bc.ReauthMax = s.reauthMax
	for _, u := range splitList(s.superUsers) {
		if typ, name, ok := strings.Cut(u, ":"); !ok || typ == "" || name == "" {
			return nil, fmt.Errorf("--super-users: %q: want User:NAME", u)
		}
		bc.SuperUsers = append(bc.SuperUsers, u)
	}
	switch s.authorizer {
	case "none", "":
	case "acl":
		bc.ACL, used = true, true
		bc.AllowEveryoneIfNoACL = s.allowEveryoneIfNoACL
	default:
		return nil, fmt.Errorf("--authorizer: %q: want none or acl", s.authorizer)
	}
	if s.allowEveryoneIfNoACL && !bc.ACL {
		return nil, errors.New("--allow-everyone-if-no-acl-found needs --authorizer acl")
	}
	if s.bootstrapUser != "" {
		name, file, ok := strings.Cut(s.bootstrapUser, ":")
		if !ok || name == "" || file == "" {
			return nil, errors.New("--sasl-bootstrap-user: want NAME:PASSWORD_FILE")
		}
		pass, err := readSecretFile(file)
		if err != nil {
			return nil, fmt.Errorf("--sasl-bootstrap-user: %v", err)
		}
		out.user, out.pass = name, pass
		if len(bc.Mechanisms) > 0 {
			bc.InterBrokerUser, bc.InterBrokerPassword = name, pass
		}
	}
	if s.saslListen != "" {
		if len(bc.Mechanisms) == 0 {
			return nil, errors.New("--sasl-listen needs --sasl-mechanisms")
		}
		p, err := listenPort("--sasl-listen", s.saslListen)
		if err != nil {
			return nil, err
		}
		out.saslPort = p
	}
	if s.tlsListen != "" {
		conf, err := s.serverTLS(logger)
		if err != nil {
			return nil, err
		}
		p, err := listenPort("--tls-listen", s.tlsListen)
		if err != nil {
			return nil, err
		}
		out.tls, out.tlsPort, used = conf, p, true
	} else if s.tlsCert != "" || s.tlsKey != "" || s.tlsClientCA != "" {
		return nil, errors.New("--tls-cert, --tls-key and --tls-client-ca need --tls-listen")
	}
	if tlsOnly {
		// Brokers reach each other's TLS listeners as clients with the Raft certificate.
		if !out.raft.Enabled() {
			return nil, errors.New("a TLS-only broker (--listen '') needs --raft-tls-cert, --raft-tls-key and --raft-tls-ca: brokers reach each other's TLS listeners with them")
		}
		conf, err := s.interBrokerTLS()
		if err != nil {
			return nil, err
		}
		bc.InterBrokerTLS = conf
	}
	if used {
		out.broker = &bc
	}
	return out, nil
}

// listenPort is the port of a listener address, which must name one.
func listenPort(flagName, addr string) (int32, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, fmt.Errorf("%s %q: %v", flagName, addr, err)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return 0, fmt.Errorf("%s %q: needs a port", flagName, addr)
	}
	return int32(p), nil
}

// protocols are the security protocols (Kafka's listener names) of the plaintext and TLS listeners:
// SASL on both when mechanisms are set, unless a SASL_PLAINTEXT listener of its own leaves --listen
// PLAINTEXT.
func (s *securitySetup) protocols() (plain, tls string) {
	sasl := s.broker != nil && len(s.broker.Mechanisms) > 0
	plain, tls = broker.ProtocolPlaintext, broker.ProtocolSSL
	if sasl {
		tls = broker.ProtocolSASLSSL
		if s.saslPort == 0 {
			plain = broker.ProtocolSASLPlaintext
		}
	}
	return plain, tls
}

// serverTLS is the TLS listener's configuration: its certificate and, for mutual TLS, the client
// CA, reloaded from their files when they change (certReloader).
func (s securityFlags) serverTLS(logger *slog.Logger) (*tls.Config, error) {
	if s.tlsCert == "" || s.tlsKey == "" {
		return nil, errors.New("--tls-listen needs --tls-cert and --tls-key")
	}
	warnReadable(logger, s.tlsKey, "--tls-key")
	r := &certReloader{flags: s, log: logger}
	conf, err := s.loadServerTLS()
	if err != nil {
		return nil, err
	}
	r.cur.Store(conf)
	r.stamp = r.stat()
	r.checked = time.Now()
	return &tls.Config{GetConfigForClient: r.config, MinVersion: tls.VersionTLS12}, nil
}

// certReloader serves the TLS configuration of the files as they are now: a handshake at most once a
// second stats them, and a change (a renewed certificate, a new CA bundle) is loaded for the
// connections that follow. A file that does not load (half written, a key that does not match) keeps
// the previous configuration, with a warning, until it does.
type certReloader struct {
	flags securityFlags
	log   *slog.Logger
	cur   atomic.Pointer[tls.Config]

	mu      sync.Mutex
	checked time.Time
	stamp   string
}

// certCheckInterval is how often a handshake looks at the files.
const certCheckInterval = time.Second

func (r *certReloader) config(*tls.ClientHelloInfo) (*tls.Config, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.checked) >= certCheckInterval {
		r.checked = time.Now()
		if stamp := r.stat(); stamp != r.stamp {
			conf, err := r.flags.loadServerTLS()
			if err != nil {
				r.log.Warn("TLS files changed but do not load; serving the previous certificate", "err", err)
			} else {
				r.cur.Store(conf)
				r.stamp = stamp
				r.log.Info("TLS certificate reloaded", "cert", r.flags.tlsCert)
			}
		}
	}
	return r.cur.Load(), nil
}

// stat summarises the files' sizes and modification times.
func (r *certReloader) stat() string {
	var b strings.Builder
	for _, f := range []string{r.flags.tlsCert, r.flags.tlsKey, r.flags.tlsClientCA} {
		if f == "" {
			continue
		}
		if fi, err := os.Stat(f); err == nil {
			fmt.Fprintf(&b, "%s:%d:%d;", f, fi.Size(), fi.ModTime().UnixNano())
		}
	}
	return b.String()
}

// loadServerTLS reads the certificate, key and client CA files.
func (s securityFlags) loadServerTLS() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(s.tlsCert, s.tlsKey)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate (--tls-cert %s, --tls-key %s): %v", s.tlsCert, s.tlsKey, err)
	}
	conf := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if s.tlsClientCA != "" {
		pem, err := os.ReadFile(s.tlsClientCA)
		if err != nil {
			return nil, fmt.Errorf("--tls-client-ca: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tls-client-ca %s: no PEM certificate in it", s.tlsClientCA)
		}
		conf.ClientCAs, conf.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return conf, nil
}

// readSecretFile reads a password file: its content without the trailing newline. A file others can
// read is refused, like ssh refuses such keys.
func readSecretFile(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("%s is readable by group or others (mode %v): chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	pass := strings.TrimRight(string(b), "\r\n")
	if pass == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return pass, nil
}

// warnReadable warns about a private key others may read.
func warnReadable(logger *slog.Logger, path, flagName string) {
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		logger.Warn("private key is readable by group or others", "flag", flagName, "file", path, "mode", fi.Mode().Perm().String())
	}
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// ensureBootstrapUser creates the bootstrap user's SCRAM credentials when it has none.
func ensureBootstrapUser(ctl *quorum.Controller, setup *securitySetup, logger *slog.Logger) error {
	if setup.user == "" {
		return nil
	}
	var creds []quorum.ScramCredential
	for _, mech := range []string{broker.MechScramSHA256, broker.MechScramSHA512} {
		cred, err := broker.NewScramCredential(mech, setup.pass, broker.ScramDefaultIterations)
		if err != nil {
			return err
		}
		creds = append(creds, cred)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		attempt, cancelAttempt := context.WithTimeout(ctx, 5*time.Second)
		created, err := ctl.SetScramCredentials(attempt, setup.user, creds, true)
		cancelAttempt()
		if err == nil {
			if created {
				logger.Info("created the bootstrap SCRAM user", "user", setup.user)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("creating the bootstrap user: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// kgoSecurity is how this broker's own Kafka client (joining a cluster) authenticates.
func (s *securitySetup) kgoSecurity() []kgo.Opt {
	if s == nil || s.broker == nil {
		return nil
	}
	var opts []kgo.Opt
	if s.broker.InterBrokerTLS != nil {
		opts = append(opts, kgo.DialTLSConfig(s.broker.InterBrokerTLS.Clone()))
	}
	if s.broker.InterBrokerUser != "" {
		opts = append(opts, kgo.SASL(broker.ClientMechanism(broker.InterBrokerMechanism(s.broker.Mechanisms), s.user, s.pass)))
	}
	return opts
}

// startListeners serves the plaintext listener (unless --listen is empty: TLS only), the TLS
// listener and the SASL_PLAINTEXT listener, and returns what closes them.
func startListeners(cfg serveConfig, security *securitySetup, br *broker.Broker, logger *slog.Logger) ([]*netio.Server, func(), error) {
	var servers []*netio.Server
	closeAll := func() {
		for _, s := range servers {
			s.Close()
		}
	}
	plainProto, tlsProto := security.protocols()
	if cfg.listen != "" {
		srv, err := netio.Listen(cfg.listen, br, netio.Options{Backend: netio.Backend(cfg.netioBackend), SecurityProtocol: plainProto, Logger: logger})
		if err != nil {
			return nil, nil, fmt.Errorf("listening on %s: %v", cfg.listen, err)
		}
		servers = append(servers, srv)
		logger.Info("sluice listening", "listen", srv.Addr().String(), "protocol", plainProto, "netio", string(srv.Backend()))
	}
	if security.tls != nil {
		srv, err := netio.Listen(cfg.sec.tlsListen, br, netio.Options{Backend: netio.BackendStd, TLS: security.tls, SecurityProtocol: tlsProto, Logger: logger})
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("listening on %s (TLS): %v", cfg.sec.tlsListen, err)
		}
		servers = append(servers, srv)
		logger.Info("sluice listening with TLS", "listen", srv.Addr().String(), "protocol", tlsProto, "mutual_tls", cfg.sec.tlsClientCA != "", "netio", string(srv.Backend()))
	}
	if security.saslPort != 0 {
		srv, err := netio.Listen(cfg.sec.saslListen, br, netio.Options{Backend: netio.Backend(cfg.netioBackend), SecurityProtocol: broker.ProtocolSASLPlaintext, Logger: logger})
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("listening on %s (SASL_PLAINTEXT): %v", cfg.sec.saslListen, err)
		}
		servers = append(servers, srv)
		logger.Info("sluice listening with SASL", "listen", srv.Addr().String(), "protocol", broker.ProtocolSASLPlaintext, "netio", string(srv.Backend()))
	}
	return servers, closeAll, nil
}

// interBrokerTLS is the client side of mutual TLS between brokers (the Raft certificate and CA), used
// to reach brokers that listen with TLS only.
func (t securityFlags) interBrokerTLS() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(t.raftTLSCert, t.raftTLSKey)
	if err != nil {
		return nil, fmt.Errorf("raft TLS certificate: %v", err)
	}
	pem, err := os.ReadFile(t.raftTLSCA)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--raft-tls-ca %s: no PEM certificate in it", t.raftTLSCA)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}
