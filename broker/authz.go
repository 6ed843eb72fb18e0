package broker

import (
	"strings"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicebroker/sluice/quorum"
)

// The ACL authorizer (--authorizer acl), with Kafka's rules (AclAuthorizer / StandardAuthorizer):
// super users may do anything; otherwise the ACLs whose resource pattern matches (a literal name,
// the literal wildcard "*", or a prefix), whose principal is the connection's or User:*, and whose
// host is the client's or "*" decide: any DENY of the operation (or All) refuses; else an ALLOW of
// it, of All, or of an operation implying it (Read, Write, Delete and Alter imply Describe;
// AlterConfigs implies DescribeConfigs) permits; no ACL refuses (allow.everyone.if.no.acl.found=false).

// Resource types and operations by their Kafka codes.
const (
	resTopic   = int8(kmsg.ACLResourceTypeTopic)
	resGroup   = int8(kmsg.ACLResourceTypeGroup)
	resCluster = int8(kmsg.ACLResourceTypeCluster)
	resTxnID   = int8(kmsg.ACLResourceTypeTransactionalId)

	aclAll             = int8(kmsg.ACLOperationAll)
	aclRead            = int8(kmsg.ACLOperationRead)
	aclWrite           = int8(kmsg.ACLOperationWrite)
	aclCreate          = int8(kmsg.ACLOperationCreate)
	aclDelete          = int8(kmsg.ACLOperationDelete)
	aclAlter           = int8(kmsg.ACLOperationAlter)
	aclDescribe        = int8(kmsg.ACLOperationDescribe)
	aclClusterAction   = int8(kmsg.ACLOperationClusterAction)
	aclDescribeConfigs = int8(kmsg.ACLOperationDescribeConfigs)
	aclAlterConfigs    = int8(kmsg.ACLOperationAlterConfigs)
	aclIdempotentWrite = int8(kmsg.ACLOperationIdempotentWrite)

	permDeny  = int8(kmsg.ACLPermissionTypeDeny)
	permAllow = int8(kmsg.ACLPermissionTypeAllow)

	patLiteral  = int8(kmsg.ACLResourcePatternTypeLiteral)
	patPrefixed = int8(kmsg.ACLResourcePatternTypePrefixed)
)

// clusterResource is the name of the one cluster resource, as in Kafka.
const clusterResource = "kafka-cluster"

// authzKey is one cached decision's question.
type authzKey struct {
	rt, op int8
	name   string
}

// authzCache holds a connection's decisions for one version of the ACLs (the *quorum.Security they
// were made against): a produce or fetch looks its topic up instead of scanning the ACLs, and a
// cached answer costs no allocation.
type authzCache struct {
	sec   *quorum.Security
	super bool
	m     map[authzKey]bool
}

// authzCacheMax bounds a connection's cache (a client touching very many topics starts over).
const authzCacheMax = 4096

// authorize reports whether the connection of c may do op on the resource. Always true unless
// --authorizer acl.
func (b *Broker) authorize(c *call, rt, op int8, name string) bool {
	if b.sec == nil || !b.sec.ACL {
		return true
	}
	st := b.connState(c.nr.Conn)
	sec := b.ctl.Metadata().SecurityOf()
	st.mu.Lock()
	defer st.mu.Unlock()
	ca := &st.authz
	if ca.sec != sec || ca.m == nil || len(ca.m) >= authzCacheMax {
		if ca.m == nil {
			ca.m = make(map[authzKey]bool)
		}
		clear(ca.m)
		ca.sec = sec
		ca.super = b.isSuperUser(st.principal)
	}
	if ca.super {
		return true
	}
	k := authzKey{rt: rt, op: op, name: name}
	if ok, hit := ca.m[k]; hit {
		return ok
	}
	ok := aclDecide(sec.ACLs, st.principal, st.host, rt, op, name)
	if !ok && b.sec.AllowEveryoneIfNoACL && !resourceHasACL(sec.ACLs, rt, name) {
		ok = true // allow.everyone.if.no.acl.found: no ACL names this resource at all
	}
	ca.m[k] = ok
	return ok
}

func (b *Broker) isSuperUser(principal string) bool {
	for _, s := range b.sec.SuperUsers {
		if s == principal {
			return true
		}
	}
	return b.sec.InterBrokerUser != "" && principal == "User:"+b.sec.InterBrokerUser
}

// aclDecide applies Kafka's rules to the ACLs.
func aclDecide(acls []quorum.ACL, principal, host string, rt, op int8, name string) bool {
	allow := false
	for i := range acls {
		a := &acls[i]
		if a.ResourceType != rt || !patternMatches(a, name) ||
			(a.Principal != principal && a.Principal != "User:*") || (a.Host != "*" && a.Host != host) {
			continue
		}
		switch a.Permission {
		case permDeny:
			if a.Operation == op || a.Operation == aclAll {
				return false
			}
		case permAllow:
			if a.Operation == op || a.Operation == aclAll || implies(a.Operation, op) {
				allow = true
			}
		}
	}
	return allow
}

// resourceHasACL reports whether any ACL, of any principal and operation, applies to the resource
// (Kafka's allow.everyone.if.no.acl.found looks at these).
func resourceHasACL(acls []quorum.ACL, rt int8, name string) bool {
	for i := range acls {
		if acls[i].ResourceType == rt && patternMatches(&acls[i], name) {
			return true
		}
	}
	return false
}

func patternMatches(a *quorum.ACL, name string) bool {
	switch a.PatternType {
	case patLiteral:
		return a.ResourceName == name || a.ResourceName == "*"
	case patPrefixed:
		return strings.HasPrefix(name, a.ResourceName)
	}
	return false
}

// implies reports whether allowing have allows want too.
func implies(have, want int8) bool {
	switch want {
	case aclDescribe:
		return have == aclRead || have == aclWrite || have == aclDelete || have == aclAlter
	case aclDescribeConfigs:
		return have == aclAlterConfigs
	}
	return false
}

// authorizeAnyTopicWrite is KIP-679's fallback for InitProducerId without a transactional id:
// Write on some topic allows idempotent produce.
func (b *Broker) authorizeAnyTopicWrite(c *call) bool {
	if b.authorize(c, resCluster, aclIdempotentWrite, clusterResource) {
		return true
	}
	st := b.connState(c.nr.Conn)
	st.mu.Lock()
	principal, host := st.principal, st.host
	st.mu.Unlock()
	for _, a := range b.ctl.Metadata().SecurityOf().ACLs {
		if a.ResourceType == resTopic && a.Permission == permAllow && (a.Operation == aclWrite || a.Operation == aclAll) &&
			(a.Principal == principal || a.Principal == "User:*") && (a.Host == "*" || a.Host == host) {
			return true
		}
	}
	return false
}
