package main

import (
	"context"
	"errors"
	"net"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/sluicebroker/sluice/internal/kafkawire"
	"github.com/sluicebroker/sluice/internal/testcluster"
)

// metadataPorts is what a Metadata request through cl says of each broker: node id to port.
func metadataPorts(t *testing.T, cl *kgo.Client) map[int32]int32 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	resp, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl)
	if err != nil {
		t.Fatalf("metadata: %v", err)
	}
	ports := map[int32]int32{}
	for _, b := range resp.Brokers {
		ports[b.NodeID] = b.Port
	}
	return ports
}

// onlyPort is the port Metadata through cl names for a single broker.
func onlyPort(t *testing.T, cl *kgo.Client) int32 {
	t.Helper()
	ports := metadataPorts(t, cl)
	if len(ports) != 1 {
		t.Fatalf("metadata names %d brokers, want 1", len(ports))
	}
	for _, p := range ports {
		return p
	}
	return 0
}

// portOf is the port of a host:port address.
func portOf(t testing.TB, addr string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return int32(n)
}

// TestSASLListener: a SASL_PLAINTEXT listener beside the plaintext one, as Kafka's
// PLAINTEXT://:9092,SASL_PLAINTEXT://:9093 (kafka-go's test set-up). The plaintext listener serves
// without SASL (User:ANONYMOUS) and answers SaslHandshake with ILLEGAL_SASL_STATE; the SASL listener
// requires SASL (PLAIN, SCRAM-SHA-256 and -512 work, a wrong mechanism is UNSUPPORTED_SASL_MECHANISM,
// no SASL is refused) and its Metadata names its own port. kcat does both when installed.
func TestSASLListener(t *testing.T) {
	saslAddr := freePort(t)
	b := startBroker(t, "--sasl-listen", saslAddr, "--sasl-mechanisms", "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
		"--sasl-bootstrap-user", adminUser+":"+passwordFile(t, adminPass))
	b.createTopic("mixed", 1, nil)

	// Plaintext: no SASL; users can be made there (no authorizer).
	anon := bareClient(t, b.Addr)
	if err := produceOne(anon, "mixed", "plaintext"); err != nil {
		t.Fatalf("produce on the plaintext listener without SASL: %v", err)
	}
	addUser(t, kadm.NewClient(anon), "alice", "alice-pw")
	if got := onlyPort(t, anon); got != portOf(t, b.Addr) {
		t.Errorf("metadata on the plaintext listener names port %d, want %d", got, portOf(t, b.Addr))
	}

	// SASL listener: each mechanism produces; Metadata names the SASL port, so the client stays there.
	for name, m := range map[string]kgo.Opt{
		"plain":     kgo.SASL(plain.Auth{User: "alice", Pass: "alice-pw"}.AsMechanism()),
		"scram-256": kgo.SASL(scram.Auth{User: "alice", Pass: "alice-pw"}.AsSha256Mechanism()),
		"scram-512": kgo.SASL(scram512("alice", "alice-pw")),
	} {
		cl := bareClient(t, saslAddr, m)
		if err := produceOne(cl, "mixed", "sasl "+name); err != nil {
			t.Fatalf("produce on the SASL listener with %s: %v", name, err)
		}
		if got := onlyPort(t, cl); got != portOf(t, saslAddr) {
			t.Errorf("metadata on the SASL listener names port %d, want the SASL port %d", got, portOf(t, saslAddr))
		}
	}
	if recs := consumeAll(t, b, "mixed"); len(recs) != 4 {
		t.Fatalf("consumed %d records on the plaintext listener, want 4", len(recs))
	}

	// No SASL on the SASL listener: closed at the first request past ApiVersions.
	noSASL := bareClient(t, saslAddr, kgo.RetryTimeout(time.Second), kgo.RequestRetries(1))
	if err := pingErr(noSASL); err == nil {
		t.Error("a client without SASL was served on the SASL listener")
	}
	if err := pingErr(bareClient(t, saslAddr, kgo.SASL(scram512("alice", "wrong")), kgo.RetryTimeout(time.Second))); !errors.Is(err, kerr.SaslAuthenticationFailed) {
		t.Errorf("wrong password on the SASL listener: %v, want SASL_AUTHENTICATION_FAILED", err)
	}
	// SaslHandshake: an unknown mechanism on the SASL listener (kafka-go's TestUnsupportedSASLMechanism),
	// any on the plaintext one (Kafka: SASL is not enabled there).
	for _, tc := range []struct {
		addr, mech string
		want       *kerr.Error
	}{
		{saslAddr, "FOO", kerr.UnsupportedSaslMechanism},
		{b.Addr, "PLAIN", kerr.IllegalSaslState},
	} {
		conn, err := net.DialTimeout("tcp", tc.addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		req := kmsg.NewPtrSASLHandshakeRequest()
		req.Version, req.Mechanism = 1, tc.mech
		resp := kmsg.NewPtrSASLHandshakeResponse()
		if err := kafkawire.Exchange(conn, "test", 1, req, resp); err != nil {
			t.Fatalf("SaslHandshake %s on %s: %v", tc.mech, tc.addr, err)
		}
		conn.Close()
		if resp.ErrorCode != tc.want.Code {
			t.Errorf("SaslHandshake %s on %s: error %d, want %s", tc.mech, tc.addr, resp.ErrorCode, tc.want.Message)
		}
	}

	if _, err := exec.LookPath("kcat"); err == nil {
		b.createTopic("kcat-sasl-listener", 1, nil)
		b.createTopic("kcat-plain-listener", 1, nil)
		kcatSecure(t, saslAddr, "kcat-sasl-listener", "security.protocol=SASL_PLAINTEXT", "sasl.mechanisms=SCRAM-SHA-512",
			"sasl.username=alice", "sasl.password=alice-pw")
		kcatSecure(t, b.Addr, "kcat-plain-listener", "security.protocol=PLAINTEXT")
	}
}

// TestClusterSASLListener: three brokers, each with a plaintext and a SASL_PLAINTEXT listener and ACLs
// enforced. Metadata through a SASL listener names every broker's SASL port, through a plaintext one
// the plaintext ports; User:ANONYMOUS on the plaintext listener is refused what it has no ACL for
// while alice, over SASL, produces; a transaction over partitions led by every broker commits (the
// brokers' WriteTxnMarkers go to each other's SASL listener as the bootstrap user: the plaintext
// listener would refuse their SASL).
func TestClusterSASLListener(t *testing.T) {
	if testing.Short() {
		t.Skip("three broker processes")
	}
	pw := passwordFile(t, adminPass)
	c := &testCluster{t: t}
	nodes := make([]*testcluster.Node, 3)
	saslAddrs := make([]string, 3)
	for i := range 3 {
		b := newTestBroker(t, int32(i+1), freePort(t), freePort(t))
		c.brokers = append(c.brokers, b)
		nodes[i] = b.Node
		saslAddrs[i] = freePort(t)
	}
	c.voters = testcluster.Voters(nodes)
	for i, b := range c.brokers {
		b.Args = append(b.Args, "--controller-voters", c.voters, "--leader-rebalance-interval", "2s",
			"--sasl-listen", saslAddrs[i], "--sasl-mechanisms", "SCRAM-SHA-512,PLAIN",
			"--sasl-bootstrap-user", adminUser+":"+pw, "--authorizer", "acl")
	}
	for _, b := range c.brokers {
		b.launch()
	}
	for _, b := range c.brokers {
		b.waitReady()
	}
	asAdmin := kgo.SASL(scram512(adminUser, adminPass))
	saslClient := func(opts ...kgo.Opt) *kgo.Client {
		cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(saslAddrs...)}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		return cl
	}
	admin := kadm.NewClient(saslClient(asAdmin))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := admin.CreateTopic(ctx, 3, 3, nil, "guarded"); err != nil {
		t.Fatal(err)
	}
	addUser(t, admin, "alice", "alice-pw")
	createACLs(t, admin, kadm.NewACLs().Allow("User:alice").Topics("guarded").Operations(kadm.OpWrite, kadm.OpRead))
	createACLs(t, admin, kadm.NewACLs().Allow("User:alice").TransactionalIDs("alice-tx").Operations(kadm.OpWrite))

	for i, b := range c.brokers {
		sasl := metadataPorts(t, bareClient(t, saslAddrs[i], asAdmin))
		plainPorts := metadataPorts(t, bareClient(t, b.Addr))
		for j, o := range c.brokers {
			if got, want := sasl[o.ID], portOf(t, saslAddrs[j]); got != want {
				t.Errorf("metadata through broker %d's SASL listener names broker %d at port %d, want its SASL port %d", b.ID, o.ID, got, want)
			}
			if got, want := plainPorts[o.ID], portOf(t, o.Addr); got != want {
				t.Errorf("metadata through broker %d's plaintext listener names broker %d at port %d, want %d", b.ID, o.ID, got, want)
			}
		}
	}

	if err := produceOne(bareClient(t, c.brokers[0].Addr, kgo.RetryTimeout(2*time.Second)), "guarded", "anonymous"); !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Errorf("User:ANONYMOUS on the plaintext listener: %v, want TOPIC_AUTHORIZATION_FAILED", err)
	}
	asAlice := kgo.SASL(scram512("alice", "alice-pw"))
	tx := saslClient(asAlice, kgo.TransactionalID("alice-tx"), kgo.TransactionTimeout(20*time.Second),
		kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	if err := tx.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	for range 6 {
		if err := tx.ProduceSync(ctx, &kgo.Record{Topic: "guarded", Value: []byte("committed")}).FirstErr(); err != nil {
			t.Fatalf("transactional produce over SASL: %v", err)
		}
	}
	if err := tx.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatalf("commit (markers to every partition's leader): %v", err)
	}
	cons := saslClient(asAlice, kgo.ConsumeTopics("guarded"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	pctx, pcancel := context.WithTimeout(ctx, 30*time.Second)
	defer pcancel()
	for seen := 0; seen < 6; {
		fs := cons.PollFetches(pctx)
		if pctx.Err() != nil {
			t.Fatalf("%d of 6 committed records visible over SASL: markers missing", seen)
		}
		fs.EachError(func(_ string, _ int32, err error) { t.Fatalf("fetch over SASL: %v", err) })
		seen += fs.NumRecords()
	}
}

// TestAllowEveryoneIfNoACLFound: --allow-everyone-if-no-acl-found (Kafka's
// allow.everyone.if.no.acl.found=true, kafka-go's test set-up) opens the resources no ACL applies to,
// to anyone (User:ANONYMOUS here, creating topics and ACLs as well); a topic an ACL names, literally or
// by prefix, follows its ACLs; a SASL user is allowed by its ACL.
func TestAllowEveryoneIfNoACLFound(t *testing.T) {
	saslAddr := freePort(t)
	b := startBroker(t, "--authorizer", "acl", "--allow-everyone-if-no-acl-found", "--sasl-listen", saslAddr,
		"--sasl-mechanisms", "SCRAM-SHA-512", "--sasl-bootstrap-user", adminUser+":"+passwordFile(t, adminPass))
	for _, topic := range []string{"open", "guarded", "guard-2"} {
		b.createTopic(topic, 1, nil)
	}
	anon := bareClient(t, b.Addr, kgo.RetryTimeout(2*time.Second))
	adm := kadm.NewClient(anon)
	if err := produceOne(anon, "open", "anyone"); err != nil {
		t.Fatalf("User:ANONYMOUS to a topic without ACLs: %v", err)
	}
	addUser(t, adm, "alice", "alice-pw") // the cluster has no ACL: open too
	createACLs(t, adm, kadm.NewACLs().Allow("User:alice").Topics("guard").ResourcePatternType(kadm.ACLPatternPrefixed).Operations(kadm.OpWrite))
	for _, topic := range []string{"guarded", "guard-2"} {
		if err := produceOne(anon, topic, "anyone"); !errors.Is(err, kerr.TopicAuthorizationFailed) {
			t.Errorf("User:ANONYMOUS to %s, which a prefixed ACL names: %v, want TOPIC_AUTHORIZATION_FAILED", topic, err)
		}
	}
	if err := produceOne(anon, "open", "still"); err != nil {
		t.Errorf("User:ANONYMOUS to a topic without ACLs after ACLs elsewhere: %v", err)
	}
	if err := produceOne(bareClient(t, saslAddr, kgo.SASL(scram512("alice", "alice-pw"))), "guarded", "alice"); err != nil {
		t.Errorf("alice, allowed by the prefixed ACL: %v", err)
	}
}
