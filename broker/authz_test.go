package broker

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicebroker/sluice/netio"
	"github.com/sluicebroker/sluice/quorum"
)

// TestACLDecide pins Kafka's authorizer rules: no ACL denies; an allow of the operation, of All, or of
// an operation implying it (Read/Write/Delete/Alter imply Describe, AlterConfigs implies
// DescribeConfigs) allows; a deny of the operation or of All wins over any allow (but a deny of Read
// does not deny Describe); patterns match literally, by the * wildcard or by prefix; principals
// literally or User:*; hosts literally or *.
func TestACLDecide(t *testing.T) {
	acl := func(name string, pat int8, principal, host string, op, perm int8) quorum.ACL {
		return quorum.ACL{ResourceType: resTopic, ResourceName: name, PatternType: pat, Principal: principal, Host: host, Operation: op, Permission: perm}
	}
	const alice, ip = "User:alice", "10.0.0.1"
	for _, tc := range []struct {
		name string
		acls []quorum.ACL
		op   int8
		res  string
		want bool
	}{
		{"no ACL", nil, aclRead, "t", false},
		{"literal allow", []quorum.ACL{acl("t", patLiteral, alice, "*", aclRead, permAllow)}, aclRead, "t", true},
		{"other topic", []quorum.ACL{acl("t", patLiteral, alice, "*", aclRead, permAllow)}, aclRead, "u", false},
		{"other operation", []quorum.ACL{acl("t", patLiteral, alice, "*", aclWrite, permAllow)}, aclRead, "t", false},
		{"write implies describe", []quorum.ACL{acl("t", patLiteral, alice, "*", aclWrite, permAllow)}, aclDescribe, "t", true},
		{"alter configs implies describe configs", []quorum.ACL{acl("t", patLiteral, alice, "*", aclAlterConfigs, permAllow)}, aclDescribeConfigs, "t", true},
		{"describe implies nothing", []quorum.ACL{acl("t", patLiteral, alice, "*", aclDescribe, permAllow)}, aclRead, "t", false},
		{"all", []quorum.ACL{acl("t", patLiteral, alice, "*", aclAll, permAllow)}, aclDelete, "t", true},
		{"wildcard topic", []quorum.ACL{acl("*", patLiteral, alice, "*", aclRead, permAllow)}, aclRead, "anything", true},
		{"prefix", []quorum.ACL{acl("orders.", patPrefixed, alice, "*", aclRead, permAllow)}, aclRead, "orders.eu", true},
		{"prefix miss", []quorum.ACL{acl("orders.", patPrefixed, alice, "*", aclRead, permAllow)}, aclRead, "ordersx", false},
		{"any user", []quorum.ACL{acl("t", patLiteral, "User:*", "*", aclRead, permAllow)}, aclRead, "t", true},
		{"other user", []quorum.ACL{acl("t", patLiteral, "User:bob", "*", aclRead, permAllow)}, aclRead, "t", false},
		{"host", []quorum.ACL{acl("t", patLiteral, alice, ip, aclRead, permAllow)}, aclRead, "t", true},
		{"other host", []quorum.ACL{acl("t", patLiteral, alice, "10.0.0.2", aclRead, permAllow)}, aclRead, "t", false},
		{"deny wins", []quorum.ACL{acl("*", patLiteral, alice, "*", aclAll, permAllow), acl("t", patLiteral, alice, "*", aclRead, permDeny)}, aclRead, "t", false},
		{"deny all wins", []quorum.ACL{acl("t", patLiteral, alice, "*", aclRead, permAllow), acl("t", patPrefixed, "User:*", "*", aclAll, permDeny)}, aclRead, "t", false},
		{"deny read keeps describe", []quorum.ACL{acl("t", patLiteral, alice, "*", aclWrite, permAllow), acl("t", patLiteral, alice, "*", aclRead, permDeny)}, aclDescribe, "t", true},
	} {
		if got := aclDecide(tc.acls, alice, ip, resTopic, tc.op, tc.res); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestACLFilter pins DescribeAcls/DeleteAcls filter matching: ANY, MATCH (the patterns that apply to
// a name), exact pattern types.
func TestACLFilter(t *testing.T) {
	lit := quorum.ACL{ResourceType: resTopic, ResourceName: "orders.eu", PatternType: patLiteral, Principal: "User:a", Host: "*", Operation: aclRead, Permission: permAllow}
	pre := lit
	pre.ResourceName, pre.PatternType = "orders.", patPrefixed
	star := lit
	star.ResourceName = "*"
	name := "orders.eu"
	other := "orders.us"
	for _, tc := range []struct {
		f    quorum.ACLFilter
		acl  quorum.ACL
		want bool
	}{
		{quorum.ACLFilter{ResourceType: quorum.ACLAny, PatternType: quorum.ACLAny, Operation: quorum.ACLAny, Permission: quorum.ACLAny}, pre, true},
		{quorum.ACLFilter{ResourceType: resTopic, ResourceName: &name, PatternType: quorum.PatternMatch, Operation: quorum.ACLAny, Permission: quorum.ACLAny}, pre, true},
		{quorum.ACLFilter{ResourceType: resTopic, ResourceName: &name, PatternType: quorum.PatternMatch, Operation: quorum.ACLAny, Permission: quorum.ACLAny}, star, true},
		{quorum.ACLFilter{ResourceType: resTopic, ResourceName: &other, PatternType: quorum.PatternMatch, Operation: quorum.ACLAny, Permission: quorum.ACLAny}, lit, false},
		{quorum.ACLFilter{ResourceType: resTopic, ResourceName: &name, PatternType: patLiteral, Operation: quorum.ACLAny, Permission: quorum.ACLAny}, pre, false},
		{quorum.ACLFilter{ResourceType: resGroup, PatternType: quorum.ACLAny, Operation: quorum.ACLAny, Permission: quorum.ACLAny}, lit, false},
		{quorum.ACLFilter{ResourceType: quorum.ACLAny, PatternType: quorum.ACLAny, Operation: aclWrite, Permission: quorum.ACLAny}, lit, false},
	} {
		if got := tc.f.Matches(tc.acl); got != tc.want {
			t.Errorf("filter %+v on %+v: %v, want %v", tc.f, tc.acl, got, tc.want)
		}
	}
}

// TestAuthorizeCachedNoAlloc: a decision already made on a connection costs no allocation (produce
// and fetch check every partition).
func TestAuthorizeCachedNoAlloc(t *testing.T) {
	b := &Broker{sec: &SecurityConfig{ACL: true}, ctl: &quorum.Controller{}}
	c := &call{nr: &netio.Request{Conn: &netio.Conn{}}}
	topic := string([]byte("orders.eu")) // as kmsg decodes it: a fresh string
	if b.authorize(c, resTopic, aclWrite, topic) {
		t.Fatal("allowed without ACLs")
	}
	if n := testing.AllocsPerRun(1000, func() { b.authorize(c, resTopic, aclWrite, topic) }); n != 0 {
		t.Fatalf("%v allocations per cached check", n)
	}
}

// TestAuthorizeCallProduceFetchNoAlloc: with ACLs on, every request passes authorizeCall first;
// Produce and Fetch (which check per partition in their handlers) must cost no allocation there.
func TestAuthorizeCallProduceFetchNoAlloc(t *testing.T) {
	b := &Broker{sec: &SecurityConfig{ACL: true}, ctl: &quorum.Controller{}}
	for _, req := range []kmsg.Request{kmsg.NewPtrProduceRequest(), kmsg.NewPtrFetchRequest()} {
		c := &call{nr: &netio.Request{Conn: &netio.Conn{}}, req: req}
		var post []func(kmsg.Response)
		if n := testing.AllocsPerRun(1000, func() { b.authorizeCall(c, &post) }); n != 0 {
			t.Errorf("%s: %v allocations per call", kmsg.NameForKey(req.Key()), n)
		}
	}
}
