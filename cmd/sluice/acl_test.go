package main

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// createACLs creates ACLs as admin and fails the test on any error.
func createACLs(t testing.TB, adm *kadm.Client, b *kadm.ACLBuilder) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	res, err := adm.CreateACLs(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Err != nil {
			t.Fatalf("create ACL %+v: %v %s", r, r.Err, r.ErrMessage)
		}
	}
}

// fetchErr consumes topic from the start and returns the first fetch error, or nil once a record came.
func fetchErr(t testing.TB, cl *kgo.Client) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errs := fs.Errors(); len(errs) > 0 {
			return errs[0].Err
		}
		if fs.NumRecords() > 0 {
			return nil
		}
	}
}

// TestACLs: --authorizer acl with real clients. A user with Write but not Read on a topic produces and
// is refused fetch; a prefixed allow covers orders.*; a deny overrides an allow; committing offsets
// needs Read on the group; a transactional producer needs Write on its transactional id; Metadata
// hides topics a user may not describe; kadm's CreateACLs/DescribeACLs/DeleteACLs round trip; users and
// ACLs survive kill -9 and restart.
func TestACLs(t *testing.T) {
	b := startSecureBroker(t, "--authorizer", "acl", "--super-users", "User:root")
	adm := b.admin()
	for _, topic := range []string{"writeonly", "orders.eu", "ordersx", "open", "secret"} {
		b.createTopic(topic, 1, nil)
	}
	addUser(t, adm, "alice", "alice-pw")
	addUser(t, adm, "bob", "bob-pw")
	alice := func(opts ...kgo.Opt) *kgo.Client {
		return bareClient(t, b.Addr, append([]kgo.Opt{kgo.SASL(scram512("alice", "alice-pw")), kgo.RetryTimeout(2 * time.Second)}, opts...)...)
	}
	bob := func(opts ...kgo.Opt) *kgo.Client {
		return bareClient(t, b.Addr, append([]kgo.Opt{kgo.SASL(scram512("bob", "bob-pw")), kgo.RetryTimeout(2 * time.Second)}, opts...)...)
	}

	// Nothing allowed yet: refused.
	if err := produceOne(alice(), "writeonly", "x"); !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Fatalf("produce without ACLs: %v, want TOPIC_AUTHORIZATION_FAILED", err)
	}

	// Write but not Read.
	createACLs(t, adm, kadm.NewACLs().Allow("User:alice").Topics("writeonly").Operations(kadm.OpWrite))
	if err := produceOne(alice(), "writeonly", "x"); err != nil {
		t.Fatalf("produce with Write: %v", err)
	}
	if err := fetchErr(t, alice(kgo.ConsumeTopics("writeonly"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))); !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Fatalf("fetch with only Write: %v, want TOPIC_AUTHORIZATION_FAILED", err)
	}

	// A prefixed allow on orders.
	createACLs(t, adm, kadm.NewACLs().Allow("User:alice").Topics("orders.").ResourcePatternType(kadm.ACLPatternPrefixed).Operations(kadm.OpWrite, kadm.OpRead))
	if err := produceOne(alice(), "orders.eu", "x"); err != nil {
		t.Fatalf("produce to orders.eu under a prefixed allow: %v", err)
	}
	if err := fetchErr(t, alice(kgo.ConsumeTopics("orders.eu"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))); err != nil {
		t.Fatalf("fetch orders.eu under a prefixed allow: %v", err)
	}
	if err := produceOne(alice(), "ordersx", "x"); !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Fatalf("produce to ordersx (outside the prefix): %v, want TOPIC_AUTHORIZATION_FAILED", err)
	}

	// A deny overrides an allow: bob may do anything on every topic but write secret.
	createACLs(t, adm, kadm.NewACLs().Allow("User:bob").Topics("*").Operations(kadm.OpAll))
	createACLs(t, adm, kadm.NewACLs().Deny("User:bob").Topics("secret").Operations(kadm.OpWrite))
	if err := produceOne(bob(), "open", "x"); err != nil {
		t.Fatalf("bob produce to open: %v", err)
	}
	if err := produceOne(bob(), "secret", "x"); !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Fatalf("bob produce to secret (denied): %v, want TOPIC_AUTHORIZATION_FAILED", err)
	}

	// Metadata hides topics alice may not describe.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	listed, err := kadm.NewClient(alice()).ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if names := listed.Names(); !slices.Equal(names, []string{"orders.eu", "writeonly"}) {
		t.Fatalf("alice sees topics %v, want [orders.eu writeonly]", names)
	}
	// Nor by topic ID (Metadata v10+): refused, the name not revealed.
	secretMD, err := adm.Metadata(ctx, "secret")
	if err != nil {
		t.Fatal(err)
	}
	byID := kmsg.NewPtrMetadataRequest()
	byID.Version = 12
	rt := kmsg.NewMetadataRequestTopic()
	rt.TopicID = secretMD.Topics["secret"].ID
	byID.Topics = append(byID.Topics, rt)
	idResp, err := byID.RequestWith(ctx, alice())
	if err != nil {
		t.Fatal(err)
	}
	if len(idResp.Topics) != 1 || idResp.Topics[0].ErrorCode != kerr.TopicAuthorizationFailed.Code || idResp.Topics[0].Topic != nil {
		t.Fatalf("alice looking secret up by ID: %+v, want TOPIC_AUTHORIZATION_FAILED without a name", idResp.Topics)
	}
	bobTopics, err := kadm.NewClient(bob()).ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !bobTopics.Has("secret") || !bobTopics.Has("open") {
		t.Fatalf("bob (All on *) sees %v", bobTopics.Names())
	}

	// Committing offsets needs Read on the group.
	commit := func() error {
		cl := alice(kgo.ConsumerGroup("g1"), kgo.ConsumeTopics("orders.eu"))
		resp, err := kadm.NewClient(cl).CommitOffsets(ctx, "g1", kadm.OffsetsFromRecords(kgo.Record{Topic: "orders.eu", Partition: 0, Offset: 0}))
		if err != nil {
			return err
		}
		return resp.Error()
	}
	if err := commit(); !errors.Is(err, kerr.GroupAuthorizationFailed) {
		t.Fatalf("commit without group Read: %v, want GROUP_AUTHORIZATION_FAILED", err)
	}
	createACLs(t, adm, kadm.NewACLs().Allow("User:alice").Groups("g1").Operations(kadm.OpRead))
	if err := commit(); err != nil {
		t.Fatalf("commit with group Read: %v", err)
	}

	// A transactional producer needs Write on its transactional id.
	txnProduce := func() error {
		cl := alice(kgo.TransactionalID("tx-alice"), kgo.TransactionTimeout(10*time.Second))
		if err := cl.BeginTransaction(); err != nil {
			return err
		}
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "orders.eu", Value: []byte("t")}).FirstErr(); err != nil {
			return err
		}
		return cl.EndTransaction(ctx, kgo.TryCommit)
	}
	if err := txnProduce(); !errors.Is(err, kerr.TransactionalIDAuthorizationFailed) {
		t.Fatalf("transactional produce without Write on the id: %v, want TRANSACTIONAL_ID_AUTHORIZATION_FAILED", err)
	}
	createACLs(t, adm, kadm.NewACLs().Allow("User:alice").TransactionalIDs("tx-alice").Operations(kadm.OpWrite))
	if err := txnProduce(); err != nil {
		t.Fatalf("transactional produce with Write on the id: %v", err)
	}

	// Only a super user (or Alter on the cluster) may change ACLs.
	created, err := kadm.NewClient(alice()).CreateACLs(ctx, kadm.NewACLs().Allow("User:alice").Topics("secret").Operations(kadm.OpAll))
	if err != nil || len(created) != 1 || !errors.Is(created[0].Err, kerr.ClusterAuthorizationFailed) {
		t.Fatalf("alice creating an ACL: %v %+v, want CLUSTER_AUTHORIZATION_FAILED", err, created)
	}

	// kadm round trip: describe what we made, delete bob's deny, describe again.
	described, err := adm.DescribeACLs(ctx, kadm.NewACLs().Allow("User:alice").AllowHosts().Topics("orders.").ResourcePatternType(kadm.ACLPatternPrefixed).Operations(kadm.OpAny))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(described[0].Described); n != 2 {
		t.Fatalf("described %d ACLs for alice on orders.*, want 2: %+v", n, described)
	}
	deleted, err := adm.DeleteACLs(ctx, kadm.NewACLs().Deny("User:bob").DenyHosts().Topics("secret").Operations(kadm.OpWrite))
	if err != nil {
		t.Fatal(err)
	}
	if len(deleted) != 1 || len(deleted[0].Deleted) != 1 {
		t.Fatalf("deleted %+v, want one ACL", deleted)
	}
	if err := produceOne(bob(), "secret", "x"); err != nil {
		t.Fatalf("bob produce to secret after the deny was deleted: %v", err)
	}

	// Users and ACLs survive kill -9 and a restart.
	b.kill9()
	b.start()
	if err := produceOne(alice(), "writeonly", "after restart"); err != nil {
		t.Fatalf("alice after restart: %v", err)
	}
	if err := produceOne(alice(), "ordersx", "x"); !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Fatalf("alice to ordersx after restart: %v, want TOPIC_AUTHORIZATION_FAILED", err)
	}
	users, err := b.admin().DescribeUserSCRAMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"admin", "alice", "bob"} {
		if _, ok := users[u]; !ok {
			t.Fatalf("user %s missing after restart: %v", u, users)
		}
	}
}

// TestSecurityOff: without security flags a SaslHandshake is answered ILLEGAL_SASL_STATE (as Kafka on
// a PLAINTEXT listener) and the connection keeps working; the ACL APIs answer SECURITY_DISABLED.
func TestSecurityOff(t *testing.T) {
	b := startBroker(t)
	cl := b.client()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	hs := kmsg.NewPtrSASLHandshakeRequest()
	hs.Mechanism = "PLAIN"
	resp, err := hs.RequestWith(ctx, cl)
	if err != nil || resp.ErrorCode != kerr.IllegalSaslState.Code {
		t.Fatalf("SaslHandshake without SASL: %v %+v, want ILLEGAL_SASL_STATE", err, resp)
	}
	if _, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl); err != nil {
		t.Fatalf("metadata after the handshake: %v", err)
	}
	d, err := kmsg.NewPtrDescribeACLsRequest().RequestWith(ctx, cl)
	if err != nil || d.ErrorCode != kerr.SecurityDisabled.Code {
		t.Fatalf("DescribeAcls without an authorizer: %v %+v, want SECURITY_DISABLED", err, d)
	}
}
