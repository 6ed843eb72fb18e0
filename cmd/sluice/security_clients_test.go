package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/segmentio/kafka-go"
	kgoscram "github.com/segmentio/kafka-go/sasl/scram"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// kcatSecure produces n lines and consumes them back with kcat (librdkafka) using the -X settings.
func kcatSecure(t *testing.T, addr, topic string, settings ...string) {
	t.Helper()
	kcat := requireKcat(t)
	var xs []string
	for _, s := range settings {
		xs = append(xs, "-X", s)
	}
	const n = 50
	var in strings.Builder
	for i := range n {
		fmt.Fprintf(&in, "secure %d\n", i)
	}
	prod := exec.Command(kcat, append([]string{"-b", addr, "-t", topic, "-P"}, xs...)...)
	prod.Stdin = strings.NewReader(in.String())
	if out, err := prod.CombinedOutput(); err != nil {
		t.Fatalf("kcat produce: %v\n%s", err, out)
	}
	cons := exec.Command(kcat, append([]string{"-b", addr, "-t", topic, "-C", "-o", "beginning", "-e", "-q", "-f", "%s\n"}, xs...)...)
	var stderr strings.Builder
	cons.Stderr = &stderr
	out, err := cons.Output()
	if err != nil {
		t.Fatalf("kcat consume: %v\n%s", err, stderr.String())
	}
	if got := lines(string(out)); len(got) != n || got[0] != "secure 0" {
		t.Fatalf("kcat consumed %d lines, want %d:\n%s", len(got), n, out)
	}
}

// TestKcatSASLSSL: kcat (librdkafka) with security.protocol=SASL_SSL and SCRAM-SHA-512, then
// SCRAM-SHA-256 over SASL_PLAINTEXT, then a wrong password refused.
func TestKcatSASLSSL(t *testing.T) {
	requireKcat(t)
	b := startSecureBroker(t)
	b.createTopic("kcat-sasl-ssl", 1, nil)
	b.createTopic("kcat-sasl-plain", 1, nil)
	addUser(t, b.admin(), "alice", "alice-pw")
	kcatSecure(t, b.TLSAddr, "kcat-sasl-ssl", "security.protocol=SASL_SSL", "sasl.mechanisms=SCRAM-SHA-512",
		"sasl.username=alice", "sasl.password=alice-pw", "ssl.ca.location="+b.pki.CAFile)
	kcatSecure(t, b.Addr, "kcat-sasl-plain", "security.protocol=SASL_PLAINTEXT", "sasl.mechanisms=SCRAM-SHA-256",
		"sasl.username=alice", "sasl.password=alice-pw")
	out, err := exec.Command(requireKcat(t), "-b", b.TLSAddr, "-L", "-m", "5", "-X", "security.protocol=SASL_SSL", "-X", "sasl.mechanisms=SCRAM-SHA-512",
		"-X", "sasl.username=alice", "-X", "sasl.password=wrong", "-X", "ssl.ca.location="+b.pki.CAFile).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "SASL authentication error") && !strings.Contains(string(out), "Authentication failed") {
		t.Fatalf("kcat with a wrong password: err %v, output:\n%s", err, out)
	}
}

// TestMutualTLS: with --tls-client-ca the client certificate's subject is the principal
// (User:CN=alice), which ACLs name; no certificate, or one from another CA, is refused at the
// handshake. kcat (SASL_SSL with a client certificate) and franz-go both work.
func TestMutualTLS(t *testing.T) {
	pki := newTestPKI(t)
	b := startSecureBrokerPKI(t, pki, "--tls-client-ca", pki.CAFile, "--authorizer", "acl")
	_, _, aliceCert := pki.issue("alice")
	aliceCertFile, aliceKeyFile, _ := pki.issue("alice2")
	b.createTopic("mtls", 1, nil)
	createACLs(t, b.admin(), kadm.NewACLs().Allow("User:CN=alice").Topics("mtls").Operations(kadm.OpWrite, kadm.OpRead))

	// The certificate is the principal only without SASL: this broker requires SASL, so this client
	// logs in as admin over mutual TLS; the certificate alone (no SASL) is the plaintext-free path below.
	cl := bareClient(t, b.TLSAddr, kgo.DialTLSConfig(pki.clientTLS(aliceCert)), kgo.SASL(scram512(adminUser, adminPass)))
	if err := produceOne(cl, "mtls", "mutual"); err != nil {
		t.Fatalf("produce over mutual TLS + SCRAM: %v", err)
	}
	b.createTopic("mtls-kcat", 1, nil)
	kcatSecure(t, b.TLSAddr, "mtls-kcat", "security.protocol=SASL_SSL", "sasl.mechanisms=SCRAM-SHA-512",
		"sasl.username="+adminUser, "sasl.password="+adminPass, "ssl.ca.location="+pki.CAFile,
		"ssl.certificate.location="+aliceCertFile, "ssl.key.location="+aliceKeyFile)

	// No client certificate: refused at the handshake.
	noCert := bareClient(t, b.TLSAddr, kgo.DialTLSConfig(pki.clientTLS()), kgo.SASL(scram512(adminUser, adminPass)), kgo.RetryTimeout(time.Second), kgo.RequestRetries(1))
	if err := pingErr(noCert); err == nil {
		t.Fatal("a client without a certificate was served under mutual TLS")
	}
	// A certificate from another CA: refused.
	other := newTestPKI(t)
	_, _, strangerCert := other.issue("stranger")
	stranger := bareClient(t, b.TLSAddr, kgo.DialTLSConfig(pki.clientTLS(strangerCert)), kgo.SASL(scram512(adminUser, adminPass)), kgo.RetryTimeout(time.Second), kgo.RequestRetries(1))
	if err := pingErr(stranger); err == nil {
		t.Fatal("a certificate from another CA was accepted")
	}
}

// TestMutualTLSPrincipal: without SASL, the certificate subject is the principal the ACLs see.
func TestMutualTLSPrincipal(t *testing.T) {
	pki := newTestPKI(t)
	cert, key, _ := pki.issue("broker")
	tlsAddr := freePort(t)
	b := newTestBroker(t, 0, freePort(t), freePort(t), "--tls-listen", tlsAddr, "--tls-cert", cert, "--tls-key", key,
		"--tls-client-ca", pki.CAFile, "--authorizer", "acl", "--super-users", "User:CN=admin,User:ANONYMOUS")
	b.start()
	_, _, adminCert := pki.issue("admin")
	_, _, aliceCert := pki.issue("alice")
	_, _, bobCert := pki.issue("bob")
	admin := kadm.NewClient(bareClient(t, tlsAddr, kgo.DialTLSConfig(pki.clientTLS(adminCert))))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := admin.CreateTopic(ctx, 1, 1, nil, "certs"); err != nil {
		t.Fatal(err)
	}
	createACLs(t, admin, kadm.NewACLs().Allow("User:CN=alice").Topics("certs").Operations(kadm.OpWrite))
	alice := bareClient(t, tlsAddr, kgo.DialTLSConfig(pki.clientTLS(aliceCert)))
	if err := produceOne(alice, "certs", "from alice"); err != nil {
		t.Fatalf("alice (User:CN=alice) produce: %v", err)
	}
	bob := bareClient(t, tlsAddr, kgo.DialTLSConfig(pki.clientTLS(bobCert)), kgo.RetryTimeout(2*time.Second))
	if err := produceOne(bob, "certs", "from bob"); !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Fatalf("bob (no ACL) produce: %v, want TOPIC_AUTHORIZATION_FAILED", err)
	}
}

// saramaSCRAM adapts franz-go's SCRAM client to sarama's SCRAMClient.
type saramaSCRAM struct {
	mech func(user, pass string) sasl.Mechanism
	sess sasl.Session
	out  []byte
	done bool
}

func (s *saramaSCRAM) Begin(user, pass, _ string) error {
	sess, first, err := s.mech(user, pass).Authenticate(context.Background(), "")
	s.sess, s.out = sess, first
	return err
}

func (s *saramaSCRAM) Step(challenge string) (string, error) {
	if challenge == "" && s.out != nil {
		out := s.out
		s.out = nil
		return string(out), nil
	}
	done, next, err := s.sess.Challenge([]byte(challenge))
	s.done = done
	return string(next), err
}

func (s *saramaSCRAM) Done() bool { return s.done }

// TestSaramaAndKafkaGoSASLSSL: sarama and kafka-go produce and consume over TLS with SCRAM-SHA-512,
// then the same under mutual TLS with client certificates.
func TestSaramaAndKafkaGoSASLSSL(t *testing.T) {
	t.Run("tls", func(t *testing.T) {
		b := startSecureBroker(t)
		saramaKafkaGoSASLSSL(t, b, b.pki.clientTLS())
	})
	t.Run("mutual-tls", func(t *testing.T) {
		pki := newTestPKI(t)
		b := startSecureBrokerPKI(t, pki, "--tls-client-ca", pki.CAFile)
		_, _, cert := pki.issue("client")
		saramaKafkaGoSASLSSL(t, b, pki.clientTLS(cert))
	})
}

func saramaKafkaGoSASLSSL(t *testing.T, b *secureBroker, tlsConf *tls.Config) {
	b.createTopic("sarama-tls", 1, nil)
	b.createTopic("kafkago-tls", 1, nil)
	addUser(t, b.admin(), "alice", "alice-pw")

	cfg := sarama.NewConfig()
	cfg.Version = sarama.V3_6_0_0
	cfg.Producer.Return.Successes = true
	cfg.Net.TLS.Enable, cfg.Net.TLS.Config = true, tlsConf
	cfg.Net.SASL.Enable, cfg.Net.SASL.User, cfg.Net.SASL.Password = true, "alice", "alice-pw"
	cfg.Net.SASL.Mechanism = sarama.SASLTypeSCRAMSHA512
	cfg.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient {
		return &saramaSCRAM{mech: func(u, p string) sasl.Mechanism { return scram.Auth{User: u, Pass: p}.AsSha512Mechanism() }}
	}
	prod, err := sarama.NewSyncProducer([]string{b.TLSAddr}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	for i := range 10 {
		if _, _, err := prod.SendMessage(&sarama.ProducerMessage{Topic: "sarama-tls", Value: sarama.StringEncoder(fmt.Sprint(i))}); err != nil {
			t.Fatalf("sarama send over SASL_SSL: %v", err)
		}
	}
	cons, err := sarama.NewConsumer([]string{b.TLSAddr}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	pc, err := cons.ConsumePartition("sarama-tls", 0, sarama.OffsetOldest)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	for i := range 10 {
		select {
		case m := <-pc.Messages():
			if string(m.Value) != fmt.Sprint(i) {
				t.Fatalf("sarama consumed %q at %d", m.Value, i)
			}
		case err := <-pc.Errors():
			t.Fatalf("sarama consume: %v", err)
		case <-time.After(20 * time.Second):
			t.Fatalf("sarama consumed %d of 10", i)
		}
	}

	mech, err := kgoscram.Mechanism(kgoscram.SHA512, "alice", "alice-pw")
	if err != nil {
		t.Fatal(err)
	}
	transport := &kafka.Transport{TLS: tlsConf, SASL: mech}
	w := &kafka.Writer{Addr: kafka.TCP(b.TLSAddr), Topic: "kafkago-tls", Transport: transport, RequiredAcks: kafka.RequireAll}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 10 {
		if err := w.WriteMessages(ctx, kafka.Message{Value: []byte(fmt.Sprint(i))}); err != nil {
			t.Fatalf("kafka-go write over SASL_SSL: %v", err)
		}
	}
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers: []string{b.TLSAddr}, Topic: "kafkago-tls", Partition: 0,
		Dialer: &kafka.Dialer{Timeout: 10 * time.Second, TLS: tlsConf.Clone(), SASLMechanism: mech},
	})
	defer r.Close()
	for i := range 10 {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("kafka-go read over SASL_SSL: %v", err)
		}
		if string(m.Value) != fmt.Sprint(i) {
			t.Fatalf("kafka-go read %q at %d", m.Value, i)
		}
	}
}
