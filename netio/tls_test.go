package netio

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"
)

// selfSigned makes a throwaway certificate for 127.0.0.1 and the pool that trusts it.
func selfSigned(t testing.TB) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "netio test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}, pool
}

// TLS runs on the std backend whatever backend was asked for; frames, ordering and file ranges (copied,
// not sendfile) work as on plaintext; the client certificate of mutual TLS reaches the handler;
// plaintext against the TLS listener is closed.
func TestTLS(t *testing.T) {
	cert, pool := selfSigned(t)
	for _, asked := range backends {
		t.Run(string(asked), func(t *testing.T) {
			h := newTestHandler(t)
			f, data := makeTestFile(t, 1<<20)
			h.file = f
			conf := &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}
			s, err := Listen("127.0.0.1:0", h, Options{Backend: asked, TLS: conf, Loops: 2})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			if s.Backend() != BackendStd {
				t.Fatalf("TLS listener runs %s, want std", s.Backend())
			}
			tc, err := tls.Dial("tcp", s.Addr().String(), &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}})
			if err != nil {
				t.Fatal(err)
			}
			defer tc.Close()
			_ = tc.SetDeadline(time.Now().Add(30 * time.Second))
			c := &client{t: t, br: bufio.NewReaderSize(tc, 64<<10)}
			if _, err := tc.Write(append(append(frame(1, opEcho, []byte("hello")), fileFrame(2, 1000, 300000)...), frame(3, opEcho, []byte("after"))...)); err != nil {
				t.Fatal(err)
			}
			c.expect(1, []byte("hello"))
			c.expectFile(2, data[1000:301000])
			c.expect(3, []byte("after"))
			if _, err := tc.Write(frame(4, opHold, []byte("held"))); err != nil {
				t.Fatal(err)
			}
			r := h.nextHeld(t)
			if pc := r.Conn.PeerCertificates(); !r.Conn.TLS() || len(pc) == 0 || pc[0].Subject.CommonName != "netio test" {
				t.Fatalf("handler sees TLS %v, peer %v", r.Conn.TLS(), pc)
			}
			h.answer(r)
			c.expect(4, []byte("held"))

			plain := dial(t, s)
			plain.send(frame(1, opEcho, []byte("x")))
			plain.expectEOF()
			h.waitDone(t)
		})
	}
}
