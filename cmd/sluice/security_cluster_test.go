package main

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicebroker/sluice/internal/testcluster"
)

// TestClusterSecurity runs three brokers with Raft over mutual TLS, SASL (SCRAM-SHA-512) required and
// ACLs enforced. Users and ACLs made through one broker hold on every broker; each broker in turn is
// killed (the controller leader among them) and restarted, and they still hold; a transaction whose
// partitions are led elsewhere commits (WriteTxnMarkers between brokers authenticate as the
// bootstrap user).
func TestClusterSecurity(t *testing.T) {
	if testing.Short() {
		t.Skip("three broker processes")
	}
	pki := newTestPKI(t)
	raftCert, raftKey, raftTLS := pki.issue("raft")
	pw := passwordFile(t, adminPass)
	c := &testCluster{t: t}
	nodes := make([]*testcluster.Node, 3)
	for i := range 3 {
		b := newTestBroker(t, int32(i+1), freePort(t), freePort(t))
		b.clientOpts = []kgo.Opt{kgo.SASL(scram512(adminUser, adminPass))}
		c.brokers = append(c.brokers, b)
		nodes[i] = b.Node
	}
	c.voters = testcluster.Voters(nodes)
	secArgs := []string{"--controller-voters", c.voters, "--leader-rebalance-interval", "2s", "--replica-lag-max", "3s",
		"--raft-tls-cert", raftCert, "--raft-tls-key", raftKey, "--raft-tls-ca", pki.CAFile,
		"--sasl-mechanisms", "SCRAM-SHA-512", "--sasl-bootstrap-user", adminUser + ":" + pw, "--authorizer", "acl",
		"--log-level", "info"}
	for _, b := range c.brokers {
		b.Args = append(b.Args, secArgs...)
	}
	for _, b := range c.brokers {
		b.launch()
	}
	for _, b := range c.brokers {
		b.waitReady()
	}
	for _, b := range c.brokers {
		// Raft answers a TLS handshake with a certificate of our CA, and asks for ours.
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", b.RaftAddr, pki.clientTLS(raftTLS))
		if err != nil {
			t.Fatalf("broker %d: Raft does not speak mutual TLS: %v", b.ID, err)
		}
		conn.Close()
	}
	admin := kadm.NewClient(c.client(kgo.SASL(scram512(adminUser, adminPass))))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := admin.CreateTopic(ctx, 3, 3, nil, "guarded"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CreateTopic(ctx, 3, 3, nil, "closed"); err != nil {
		t.Fatal(err)
	}
	addUser(t, admin, "alice", "alice-pw")
	createACLs(t, admin, kadm.NewACLs().Allow("User:alice").Topics("guarded").Operations(kadm.OpWrite, kadm.OpRead))
	createACLs(t, admin, kadm.NewACLs().Allow("User:alice").TransactionalIDs("alice-tx").Operations(kadm.OpWrite))

	// Through each broker alone: the user and the ACLs are everywhere.
	check := func(when string) {
		t.Helper()
		for _, b := range c.brokers {
			if !b.Running() {
				continue
			}
			cl := bareClient(t, b.Addr, kgo.SASL(scram512("alice", "alice-pw")), kgo.RetryTimeout(20*time.Second))
			if err := produceOne(cl, "guarded", when); err != nil {
				t.Fatalf("%s: alice through broker %d: %v", when, b.ID, err)
			}
			denied := bareClient(t, b.Addr, kgo.SASL(scram512("alice", "alice-pw")), kgo.RetryTimeout(2*time.Second))
			if err := produceOne(denied, "closed", when); !errors.Is(err, kerr.TopicAuthorizationFailed) {
				t.Fatalf("%s: alice to closed through broker %d: %v, want TOPIC_AUTHORIZATION_FAILED", when, b.ID, err)
			}
		}
	}
	check("at start")
	txn := func(when string) {
		t.Helper()
		cl := c.client(kgo.SASL(scram512("alice", "alice-pw")), kgo.TransactionalID("alice-tx"), kgo.TransactionTimeout(20*time.Second),
			kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 6; i++ {
			if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "guarded", Value: []byte(when)}).FirstErr(); err != nil {
				t.Fatalf("%s: transactional produce: %v", when, err)
			}
		}
		if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
			t.Fatalf("%s: commit (markers to every partition's leader): %v", when, err)
		}
		// read_committed sees the records only once every partition has its commit marker, written
		// by the coordinator's broker into partitions other brokers lead.
		cons := c.client(kgo.SASL(scram512("alice", "alice-pw")), kgo.ConsumeTopics("guarded"),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
		pctx, pcancel := context.WithTimeout(ctx, 30*time.Second)
		defer pcancel()
		for seen := 0; seen < 6; {
			fs := cons.PollFetches(pctx)
			if pctx.Err() != nil {
				t.Fatalf("%s: %d of 6 committed records visible: markers missing", when, seen)
			}
			fs.EachError(func(_ string, _ int32, err error) { t.Fatalf("%s: fetch: %v", when, err) })
			fs.EachRecord(func(r *kgo.Record) {
				if string(r.Value) == when {
					seen++
				}
			})
		}
	}
	txn("txn at start")
	for _, b := range c.brokers {
		b.kill9()
		check("broker " + string(rune('0'+b.ID)) + " down")
		b.start()
	}
	check("after every broker restarted")
	txn("txn after every broker restarted")

	// A fourth broker joins through the others (BrokerRegistration as the bootstrap user, Raft over TLS).
	b4 := newTestBroker(t, 4, freePort(t), freePort(t))
	b4.clientOpts = []kgo.Opt{kgo.SASL(scram512(adminUser, adminPass))}
	b4.Args = append(b4.Args, append(secArgs, "--bootstrap-servers", c.brokers[0].Addr+","+c.brokers[1].Addr)...)
	c.brokers = append(c.brokers, b4)
	b4.start()
	check("after a fourth broker joined")
}

// TestClusterTLSOnly: three brokers without a plaintext listener (--listen ”), mutual TLS for clients
// and Raft, ACLs by certificate. Brokers reach each other's TLS listeners with the Raft certificate
// (User:CN=raft, a super user): a transaction whose partitions other brokers lead commits and
// becomes visible to read_committed; a client certificate without ACLs is refused.
func TestClusterTLSOnly(t *testing.T) {
	if testing.Short() {
		t.Skip("three broker processes")
	}
	pki := newTestPKI(t)
	raftCert, raftKey, _ := pki.issue("raft")
	cert, key, _ := pki.issue("broker")
	_, _, adminCert := pki.issue("admin")
	_, _, aliceCert := pki.issue("alice")
	c := &testCluster{t: t}
	nodes := make([]*testcluster.Node, 3)
	for i := range 3 {
		b := newTestBroker(t, int32(i+1), freePort(t), freePort(t))
		b.clientOpts = []kgo.Opt{kgo.DialTLSConfig(pki.clientTLS(adminCert))}
		c.brokers = append(c.brokers, b)
		nodes[i] = b.Node
	}
	c.voters = testcluster.Voters(nodes)
	for _, b := range c.brokers {
		b.Args = append(b.Args, "--controller-voters", c.voters, "--leader-rebalance-interval", "2s",
			"--listen", "", "--tls-listen", b.Addr, "--tls-cert", cert, "--tls-key", key, "--tls-client-ca", pki.CAFile,
			"--raft-tls-cert", raftCert, "--raft-tls-key", raftKey, "--raft-tls-ca", pki.CAFile,
			"--authorizer", "acl", "--super-users", "User:CN=raft,User:CN=admin")
	}
	for _, b := range c.brokers {
		b.launch()
	}
	for _, b := range c.brokers {
		b.waitReady()
	}
	admin := kadm.NewClient(c.client(kgo.DialTLSConfig(pki.clientTLS(adminCert))))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := admin.CreateTopic(ctx, 3, 3, nil, "tlsonly"); err != nil {
		t.Fatal(err)
	}
	cl := c.client(kgo.DialTLSConfig(pki.clientTLS(adminCert)), kgo.TransactionalID("tlsonly-tx"), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 6; i++ {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "tlsonly", Value: []byte("committed")}).FirstErr(); err != nil {
			t.Fatalf("transactional produce: %v", err)
		}
	}
	if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatalf("commit: %v", err)
	}
	cons := c.client(kgo.DialTLSConfig(pki.clientTLS(adminCert)), kgo.ConsumeTopics("tlsonly"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	pctx, pcancel := context.WithTimeout(ctx, 30*time.Second)
	defer pcancel()
	for seen := 0; seen < 6; {
		fs := cons.PollFetches(pctx)
		if pctx.Err() != nil {
			t.Fatalf("%d of 6 committed records visible: markers between TLS-only brokers missing", seen)
		}
		seen += fs.NumRecords()
	}
	alice := c.client(kgo.DialTLSConfig(pki.clientTLS(aliceCert)), kgo.RetryTimeout(2*time.Second))
	if err := produceOne(alice, "tlsonly", "x"); !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Fatalf("alice without ACLs: %v, want TOPIC_AUTHORIZATION_FAILED", err)
	}
}
