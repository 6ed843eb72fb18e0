package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/sluicebroker/sluice/internal/kafkawire"
)

// testPKI is a throwaway certificate authority made in the test (no key is ever committed).
type testPKI struct {
	t    testing.TB
	dir  string
	ca   *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
	// CAFile is the CA certificate as PEM.
	CAFile string
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "sluice test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	p := &testPKI{t: t, dir: t.TempDir(), ca: ca, key: key, pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	p.CAFile = p.write("ca.pem", "CERTIFICATE", der)
	return p
}

func (p *testPKI) write(name, typ string, der []byte) string {
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		p.t.Fatal(err)
	}
	return path
}

// issue makes a certificate for cn, valid for loopback as a server and as a client, and returns its
// PEM files and the tls.Certificate.
func (p *testPKI) issue(cn string) (certFile, keyFile string, cert tls.Certificate) {
	p.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		p.t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.key)
	if err != nil {
		p.t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		p.t.Fatal(err)
	}
	certFile = p.write(cn+".pem", "CERTIFICATE", der)
	keyFile = p.write(cn+".key", "PRIVATE KEY", kder)
	cert, err = tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		p.t.Fatal(err)
	}
	return certFile, keyFile, cert
}

// clientTLS trusts the test CA (and presents certs, for mutual TLS).
func (p *testPKI) clientTLS(certs ...tls.Certificate) *tls.Config {
	return &tls.Config{RootCAs: p.pool, Certificates: certs, ServerName: "127.0.0.1"}
}

// passwordFile writes a password file as an operator would (mode 600, trailing newline).
func passwordFile(t testing.TB, password string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(path, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const (
	adminUser = "admin"
	adminPass = "admin-secret"
)

func scram512(user, pass string) sasl.Mechanism {
	return scram.Auth{User: user, Pass: pass}.AsSha512Mechanism()
}

// secureBroker is a broker with a TLS listener beside its plaintext one, SASL required on both, and
// the bootstrap user admin (a super user). Its clientOpts log in as admin over the plaintext listener.
type secureBroker struct {
	*testBroker
	TLSAddr string
	pki     *testPKI
}

func startSecureBroker(t *testing.T, extra ...string) *secureBroker {
	t.Helper()
	return startSecureBrokerPKI(t, newTestPKI(t), extra...)
}

// startSecureBrokerPKI is startSecureBroker with the caller's CA (for --tls-client-ca).
func startSecureBrokerPKI(t *testing.T, pki *testPKI, extra ...string) *secureBroker {
	t.Helper()
	cert, key, _ := pki.issue("broker")
	tlsAddr := freePort(t)
	args := append([]string{
		"--tls-listen", tlsAddr, "--tls-cert", cert, "--tls-key", key,
		"--sasl-mechanisms", "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
		"--sasl-bootstrap-user", adminUser + ":" + passwordFile(t, adminPass),
	}, extra...)
	b := newTestBroker(t, 0, freePort(t), freePort(t), args...)
	b.clientOpts = []kgo.Opt{kgo.SASL(scram512(adminUser, adminPass))}
	b.start()
	return &secureBroker{testBroker: b, TLSAddr: tlsAddr, pki: pki}
}

// tlsClient is a client of the TLS listener with the given options.
func (b *secureBroker) tlsClient(t testing.TB, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(b.TLSAddr), kgo.DialTLSConfig(b.pki.clientTLS())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// addUser creates a SCRAM user (both mechanisms) through AlterUserScramCredentials as admin.
func addUser(t testing.TB, adm *kadm.Client, user, pass string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	res, err := adm.AlterUserSCRAMs(ctx, nil, []kadm.UpsertSCRAM{
		{User: user, Mechanism: kadm.ScramSha256, Iterations: 4096, Password: pass},
		{User: user, Mechanism: kadm.ScramSha512, Iterations: 4096, Password: pass},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := res.Error(); err != nil {
		t.Fatalf("create user %s: %v", user, err)
	}
}

// bareClient is a client of addr with only the given options.
func bareClient(t testing.TB, addr string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(addr)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// produceOne produces one record synchronously and returns the error.
func produceOne(cl *kgo.Client, topic, value string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte(value)}).FirstErr()
}

// pingErr is the error of a metadata request: how a client learns that it cannot log in.
func pingErr(cl *kgo.Client) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl)
	return err
}

// TestSecurityTLSAndSASL: franz-go produces and consumes over TLS with SCRAM-SHA-512, SCRAM-SHA-256
// and PLAIN, and over the plaintext listener with SASL; a wrong password, an unknown user, no SASL at
// all and plaintext against the TLS port are refused, and the broker keeps serving the others.
func TestSecurityTLSAndSASL(t *testing.T) {
	b := startSecureBroker(t)
	b.createTopic("secure", 1, nil)
	addUser(t, b.admin(), "alice", "alice-pw")

	mechs := map[string]sasl.Mechanism{
		"scram-512": scram512("alice", "alice-pw"),
		"scram-256": scram.Auth{User: "alice", Pass: "alice-pw"}.AsSha256Mechanism(),
		"plain":     plain.Auth{User: "alice", Pass: "alice-pw"}.AsMechanism(),
	}
	for name, m := range mechs {
		cl := b.tlsClient(t, kgo.SASL(m), kgo.DefaultProduceTopic("secure"))
		if err := produceOne(cl, "secure", "over TLS with "+name); err != nil {
			t.Fatalf("produce over TLS with %s: %v", name, err)
		}
	}
	// SASL_PLAINTEXT on the plaintext listener.
	if err := produceOne(bareClient(t, b.Addr, kgo.SASL(scram512("alice", "alice-pw"))), "secure", "plaintext scram"); err != nil {
		t.Fatalf("produce over SASL_PLAINTEXT: %v", err)
	}
	recs := consumeAll(t, b.testBroker, "secure")
	if len(recs) != 4 {
		t.Fatalf("consumed %d records, want 4", len(recs))
	}
	// Consume over TLS too.
	cl := b.tlsClient(t, kgo.SASL(scram512("alice", "alice-pw")), kgo.ConsumeTopics("secure"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got := 0
	for got < 4 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of 4 over TLS", got)
		}
		fs.EachError(func(_ string, _ int32, err error) { t.Fatalf("fetch over TLS: %v", err) })
		got += fs.NumRecords()
	}

	refused := map[string]*kgo.Client{
		"wrong password":    b.tlsClient(t, kgo.SASL(scram512("alice", "nope")), kgo.RetryTimeout(time.Second)),
		"unknown user":      b.tlsClient(t, kgo.SASL(scram512("mallory", "x")), kgo.RetryTimeout(time.Second)),
		"plain wrong":       b.tlsClient(t, kgo.SASL(plain.Auth{User: "alice", Pass: "nope"}.AsMechanism()), kgo.RetryTimeout(time.Second)),
		"plain unknown":     bareClient(t, b.Addr, kgo.SASL(plain.Auth{User: "nobody", Pass: "x"}.AsMechanism()), kgo.RetryTimeout(time.Second)),
		"scram-256 unknown": bareClient(t, b.Addr, kgo.SASL(scram.Auth{User: "nobody", Pass: "x"}.AsSha256Mechanism()), kgo.RetryTimeout(time.Second)),
	}
	for name, cl := range refused {
		if err := pingErr(cl); !errors.Is(err, kerr.SaslAuthenticationFailed) {
			t.Errorf("%s: got %v, want SASL_AUTHENTICATION_FAILED", name, err)
		}
	}
	// No SASL at all: the broker closes the connection at the first request that is not ApiVersions.
	noSASL, err := kgo.NewClient(kgo.SeedBrokers(b.Addr), kgo.RetryTimeout(time.Second), kgo.RequestRetries(1))
	if err != nil {
		t.Fatal(err)
	}
	defer noSASL.Close()
	if err := pingErr(noSASL); err == nil {
		t.Error("a client without SASL was served")
	}
	// Plaintext against the TLS port.
	plainOnTLS, err := kgo.NewClient(kgo.SeedBrokers(b.TLSAddr), kgo.SASL(scram512("alice", "alice-pw")), kgo.RetryTimeout(time.Second), kgo.RequestRetries(1))
	if err != nil {
		t.Fatal(err)
	}
	defer plainOnTLS.Close()
	if err := pingErr(plainOnTLS); err == nil {
		t.Error("a plaintext client was served on the TLS port")
	}
	// Garbage SASL exchanges never stall or crash the broker.
	garbageSASL(t, b.Addr)
	// The broker still serves the others.
	if err := produceOne(b.tlsClient(t, kgo.SASL(scram512("alice", "alice-pw"))), "secure", "after the refusals"); err != nil {
		t.Fatalf("produce after refusals: %v", err)
	}
}

// garbageSASL sends malformed SASL payloads on raw connections; each must be answered with an error
// or closed, promptly.
func garbageSASL(t *testing.T, addr string) {
	t.Helper()
	payloads := [][]byte{
		nil, {0}, []byte("\x00\x00"), []byte("n,,"), []byte("n,,n=,r="), []byte("p=tls-unique,,n=a,r=b"),
		[]byte("n,,n=admin,r=abc"), []byte("c=biws,r=zzz,p=AAAA"), []byte(strings.Repeat("=", 5000)),
		[]byte("n,,n=ad=ZZmin,r=x"), []byte("y,a=other,n=admin,r=x"),
	}
	for _, mech := range []string{"SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN", "GSSAPI"} {
		for _, p := range payloads {
			conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
			hs := kmsg.NewPtrSASLHandshakeRequest()
			hs.Version, hs.Mechanism = 1, mech
			hsResp := kmsg.NewPtrSASLHandshakeResponse()
			if err := kafkawire.Exchange(conn, "test", 1, hs, hsResp); err != nil {
				t.Fatalf("%s handshake: %v", mech, err)
			}
			if mech == "GSSAPI" {
				if hsResp.ErrorCode != kerr.UnsupportedSaslMechanism.Code {
					t.Fatalf("GSSAPI handshake: error %d, want UNSUPPORTED_SASL_MECHANISM", hsResp.ErrorCode)
				}
				conn.Close()
				break
			}
			// Two steps of garbage: either step may be refused.
			for step := 0; step < 2; step++ {
				req := kmsg.NewPtrSASLAuthenticateRequest()
				req.Version, req.SASLAuthBytes = 1, p
				resp := kmsg.NewPtrSASLAuthenticateResponse()
				err := kafkawire.Exchange(conn, "test", int32(2+step), req, resp)
				if err != nil {
					if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "reset") {
						break // closed after the failure answer
					}
					var ne net.Error
					if errors.As(err, &ne) && ne.Timeout() {
						t.Fatalf("%s %q: the broker stalled", mech, p)
					}
					t.Fatalf("%s %q: %v", mech, p, err)
				}
				if resp.ErrorCode != 0 && resp.ErrorCode != kerr.SaslAuthenticationFailed.Code {
					t.Fatalf("%s %q: error %d", mech, p, resp.ErrorCode)
				}
				if resp.ErrorCode != 0 {
					break
				}
			}
			conn.Close()
		}
	}
}

// TestSecurityFlagErrors: bad security settings fail at start with what to fix.
func TestSecurityFlagErrors(t *testing.T) {
	pki := newTestPKI(t)
	cert, key, _ := pki.issue("broker")
	_, otherKey, _ := newTestPKI(t).issue("other")
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	os.WriteFile(garbage, []byte("not a certificate"), 0o600)
	open := filepath.Join(t.TempDir(), "open.pw")
	os.WriteFile(open, []byte("pw\n"), 0o644)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		name string
		f    securityFlags
		want string
	}{
		{"unknown mechanism", securityFlags{saslMechanisms: "SCRAM-SHA-1"}, "unknown mechanism"},
		{"bad authorizer", securityFlags{authorizer: "opa"}, "--authorizer"},
		{"garbage certificate", securityFlags{tlsListen: "127.0.0.1:1", tlsCert: garbage, tlsKey: key}, "--tls-cert"},
		{"key of another certificate", securityFlags{tlsListen: "127.0.0.1:1", tlsCert: cert, tlsKey: otherKey}, "private key does not match"},
		{"no key", securityFlags{tlsListen: "127.0.0.1:1", tlsCert: cert}, "needs --tls-cert and --tls-key"},
		{"bad client CA", securityFlags{tlsListen: "127.0.0.1:1", tlsCert: cert, tlsKey: key, tlsClientCA: garbage}, "no PEM certificate"},
		{"cert without listener", securityFlags{tlsCert: cert}, "need --tls-listen"},
		{"password file readable by others", securityFlags{bootstrapUser: "admin:" + open}, "chmod 600"},
		{"bootstrap user without file", securityFlags{bootstrapUser: "admin"}, "NAME:PASSWORD_FILE"},
		{"super user without type", securityFlags{superUsers: "alice"}, "User:NAME"},
		{"raft TLS incomplete", securityFlags{raftTLSCert: cert}, "--raft-tls-key"},
	} {
		_, err := tc.f.resolve(logger, ":9092")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error about %q", tc.name, err, tc.want)
		}
	}
}

// rawScramLogin runs SaslHandshake v1 and SCRAM-SHA-512 SaslAuthenticate v1 on conn and returns the
// last response.
func rawScramLogin(t *testing.T, conn net.Conn, corr *int32, user, pass string) *kmsg.SASLAuthenticateResponse {
	t.Helper()
	hs := kmsg.NewPtrSASLHandshakeRequest()
	hs.Version, hs.Mechanism = 1, "SCRAM-SHA-512"
	hsResp := kmsg.NewPtrSASLHandshakeResponse()
	*corr++
	if err := kafkawire.Exchange(conn, "test", *corr, hs, hsResp); err != nil || hsResp.ErrorCode != 0 {
		t.Fatalf("handshake: %v, error %d", err, hsResp.ErrorCode)
	}
	sess, msg, err := scram512(user, pass).Authenticate(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	for {
		req := kmsg.NewPtrSASLAuthenticateRequest()
		req.Version, req.SASLAuthBytes = 1, msg
		resp := kmsg.NewPtrSASLAuthenticateResponse()
		*corr++
		if err := kafkawire.Exchange(conn, "test", *corr, req, resp); err != nil {
			t.Fatalf("authenticate: %v", err)
		}
		if resp.ErrorCode != 0 {
			return resp
		}
		done, next, err := sess.Challenge(resp.SASLAuthBytes)
		if err != nil {
			t.Fatal(err)
		}
		if done {
			return resp
		}
		msg = next
	}
}

// TestSASLReauthentication (KIP-368, --connections-max-reauth): the session lifetime is announced; a
// client that re-authenticates keeps its connection (franz-go does so on its own); a session that
// expires closes the connection at its next request; re-authenticating as another user fails.
func TestSASLReauthentication(t *testing.T) {
	b := startSecureBroker(t, "--connections-max-reauth", "2s")
	b.createTopic("reauth", 1, nil)
	addUser(t, b.admin(), "alice", "alice-pw")
	addUser(t, b.admin(), "bob", "bob-pw")

	// franz-go re-authenticates before each session ends: a steady producer never fails.
	cl := bareClient(t, b.Addr, kgo.SASL(scram512("alice", "alice-pw")))
	for i := 0; i < 25; i++ {
		if err := produceOne(cl, "reauth", "x"); err != nil {
			t.Fatalf("produce %d across session lifetimes: %v", i, err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	dial := func() net.Conn {
		conn, err := net.DialTimeout("tcp", b.Addr, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
		return conn
	}
	metadata := func(conn net.Conn, corr int32) error {
		return kafkawire.Exchange(conn, "test", corr, kmsg.NewPtrMetadataRequest(), kmsg.NewPtrMetadataResponse())
	}

	// Expiry: no re-authentication, the next request after 2 s closes the connection.
	var corr int32
	conn := dial()
	if resp := rawScramLogin(t, conn, &corr, "alice", "alice-pw"); resp.ErrorCode != 0 || resp.SessionLifetimeMillis != 2000 {
		t.Fatalf("login: error %d, session lifetime %d ms, want 2000", resp.ErrorCode, resp.SessionLifetimeMillis)
	}
	if err := metadata(conn, 100); err != nil {
		t.Fatalf("metadata within the session: %v", err)
	}
	time.Sleep(2200 * time.Millisecond)
	if err := metadata(conn, 101); err == nil {
		t.Fatal("metadata after the session expired was answered")
	}

	// Re-authentication keeps the connection; as another user it fails.
	corr = 0
	conn = dial()
	rawScramLogin(t, conn, &corr, "alice", "alice-pw")
	time.Sleep(1500 * time.Millisecond)
	if resp := rawScramLogin(t, conn, &corr, "alice", "alice-pw"); resp.ErrorCode != 0 {
		t.Fatalf("re-authentication: error %d", resp.ErrorCode)
	}
	time.Sleep(1000 * time.Millisecond) // past the first session's end, within the second
	if err := metadata(conn, 100); err != nil {
		t.Fatalf("metadata after re-authenticating: %v", err)
	}
	if resp := rawScramLogin(t, conn, &corr, "bob", "bob-pw"); resp.ErrorCode != kerr.SaslAuthenticationFailed.Code {
		t.Fatalf("re-authentication as bob: error %d, want SASL_AUTHENTICATION_FAILED", resp.ErrorCode)
	}
}

// TestTLSCertificateReload: replacing the certificate files (a renewal) changes what new TLS
// connections are served, without a restart; a half-written pair keeps the previous certificate.
func TestTLSCertificateReload(t *testing.T) {
	pki := newTestPKI(t)
	certSrc, keySrc, _ := pki.issue("first")
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "broker.pem"), filepath.Join(dir, "broker.key")
	copyFile := func(from, to string) {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	copyFile(certSrc, cert)
	copyFile(keySrc, key)
	tlsAddr := freePort(t)
	b := newTestBroker(t, 0, freePort(t), freePort(t), "--tls-listen", tlsAddr, "--tls-cert", cert, "--tls-key", key)
	b.start()
	served := func() string {
		conn, err := tls.Dial("tcp", tlsAddr, pki.clientTLS())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	if cn := served(); cn != "first" {
		t.Fatalf("served %q, want first", cn)
	}
	// Half written: a new certificate with the old key. Not loaded.
	certSrc2, keySrc2, _ := pki.issue("second")
	copyFile(certSrc2, cert)
	time.Sleep(1100 * time.Millisecond)
	if cn := served(); cn != "first" {
		t.Fatalf("served %q from a mismatched pair, want first", cn)
	}
	copyFile(keySrc2, key)
	deadline := time.Now().Add(5 * time.Second)
	for served() != "second" {
		if time.Now().After(deadline) {
			t.Fatal("the renewed certificate was not served")
		}
		time.Sleep(300 * time.Millisecond)
	}
	// The broker still serves clients over TLS.
	cl := bareClient(t, tlsAddr, kgo.DialTLSConfig(pki.clientTLS()))
	if err := pingErr(cl); err != nil {
		t.Fatal(err)
	}
}
