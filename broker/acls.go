package broker

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicebroker/sluice/quorum"
)

// The security admin APIs: ACLs (DescribeAcls, CreateAcls, DeleteAcls) and SCRAM users
// (DescribeUserScramCredentials, AlterUserScramCredentials), kept in the controller group
// (quorum/security.go). Each checks its own cluster operation: Describe to read, Alter to change.

// serveCall adapts a handler that needs the call (to authorize) to api.serve.
func serveCall[R kmsg.Request](handle func(b *Broker, c *call, req R) kmsg.Response) func(*Broker, *call) kmsg.Response {
	return func(b *Broker, c *call) kmsg.Response { return handle(b, c, c.req.(R)) }
}

func init() {
	// v1 adds pattern types (KIP-290), v2 is flexible, v3 adds the user resource type.
	register(kmsg.DescribeACLs, 0, 3, serveCall((*Broker).handleDescribeACLs))
	register(kmsg.CreateACLs, 0, 3, serveCall((*Broker).handleCreateACLs))
	register(kmsg.DeleteACLs, 0, 3, serveCall((*Broker).handleDeleteACLs))
	register(kmsg.DescribeUserSCRAMCredentials, 0, 0, serveCall((*Broker).handleDescribeUserScram))
	register(kmsg.AlterUserSCRAMCredentials, 0, 0, serveCall((*Broker).handleAlterUserScram))
}

// securityTimeout bounds a change of the security metadata (a controller proposal).
const securityTimeout = 10 * time.Second

func (b *Broker) clusterAllowed(c *call, op int8) bool {
	return b.authorize(c, resCluster, op, clusterResource)
}

// aclsEnabled: without --authorizer acl the ACL APIs answer SECURITY_DISABLED, as Kafka without an
// authorizer does.
func (b *Broker) aclsEnabled() bool { return b.sec != nil && b.sec.ACL }

func (b *Broker) handleDescribeACLs(c *call, req *kmsg.DescribeACLsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.DescribeACLsResponse)
	switch {
	case !b.aclsEnabled():
		resp.ErrorCode = kerr.SecurityDisabled.Code
		return resp
	case !b.clusterAllowed(c, aclDescribe):
		resp.ErrorCode = kerr.ClusterAuthorizationFailed.Code
		return resp
	}
	f := quorum.ACLFilter{
		ResourceType: int8(req.ResourceType), ResourceName: req.ResourceName, PatternType: int8(req.ResourcePatternType),
		Principal: req.Principal, Host: req.Host, Operation: int8(req.Operation), Permission: int8(req.PermissionType),
	}
	if req.Version == 0 {
		f.PatternType = patLiteral
	}
	for _, a := range b.ctl.Metadata().SecurityOf().ACLs {
		if !f.Matches(a) {
			continue
		}
		i := slices.IndexFunc(resp.Resources, func(r kmsg.DescribeACLsResponseResource) bool {
			return int8(r.ResourceType) == a.ResourceType && r.ResourceName == a.ResourceName && int8(r.ResourcePatternType) == a.PatternType
		})
		if i < 0 {
			r := kmsg.NewDescribeACLsResponseResource()
			r.ResourceType, r.ResourceName, r.ResourcePatternType = kmsg.ACLResourceType(a.ResourceType), a.ResourceName, kmsg.ACLResourcePatternType(a.PatternType)
			resp.Resources = append(resp.Resources, r)
			i = len(resp.Resources) - 1
		}
		e := kmsg.NewDescribeACLsResponseResourceACL()
		e.Principal, e.Host, e.Operation, e.PermissionType = a.Principal, a.Host, kmsg.ACLOperation(a.Operation), kmsg.ACLPermissionType(a.Permission)
		resp.Resources[i].ACLs = append(resp.Resources[i].ACLs, e)
	}
	return resp
}

// validACL checks a new ACL as Kafka does; the message says what is wrong.
func validACL(a quorum.ACL) error {
	switch a.ResourceType {
	case resTopic, resGroup, resTxnID:
		if a.ResourceName == "" {
			return fmt.Errorf("resource name must not be empty")
		}
	case resCluster:
		if a.ResourceName != clusterResource || a.PatternType != patLiteral {
			return fmt.Errorf("the cluster resource is the literal %q", clusterResource)
		}
	default:
		return fmt.Errorf("resource type %s is not supported", kmsg.ACLResourceType(a.ResourceType))
	}
	if a.PatternType != patLiteral && a.PatternType != patPrefixed {
		return fmt.Errorf("pattern type must be LITERAL or PREFIXED, not %s", kmsg.ACLResourcePatternType(a.PatternType))
	}
	if typ, name, ok := strings.Cut(a.Principal, ":"); !ok || typ == "" || name == "" {
		return fmt.Errorf("principal %q: want Type:name (User:alice)", a.Principal)
	}
	if a.Host == "" {
		return fmt.Errorf("host must be * or an address")
	}
	if a.Operation <= int8(kmsg.ACLOperationAny) || a.Operation > aclIdempotentWrite {
		return fmt.Errorf("operation %s is not supported", kmsg.ACLOperation(a.Operation))
	}
	if a.Permission != permAllow && a.Permission != permDeny {
		return fmt.Errorf("permission must be ALLOW or DENY")
	}
	return nil
}

func (b *Broker) handleCreateACLs(c *call, req *kmsg.CreateACLsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.CreateACLsResponse)
	resp.Results = make([]kmsg.CreateACLsResponseResult, len(req.Creations))
	allowed := b.clusterAllowed(c, aclAlter)
	var acls []quorum.ACL
	var idx []int
	for i, cr := range req.Creations {
		r := &resp.Results[i]
		*r = kmsg.NewCreateACLsResponseResult()
		a := quorum.ACL{
			ResourceType: int8(cr.ResourceType), ResourceName: cr.ResourceName, PatternType: int8(cr.ResourcePatternType),
			Principal: cr.Principal, Host: cr.Host, Operation: int8(cr.Operation), Permission: int8(cr.PermissionType),
		}
		if req.Version == 0 {
			a.PatternType = patLiteral
		}
		if !b.aclsEnabled() {
			r.ErrorCode = kerr.SecurityDisabled.Code
			continue
		}
		if !allowed {
			r.ErrorCode = kerr.ClusterAuthorizationFailed.Code
			continue
		}
		if err := validACL(a); err != nil {
			r.ErrorCode, r.ErrorMessage = kerr.InvalidRequest.Code, errorMessage(err)
			continue
		}
		acls = append(acls, a)
		idx = append(idx, i)
	}
	if len(acls) == 0 {
		return resp
	}
	ctx, cancel := context.WithTimeout(b.ctx, securityTimeout)
	defer cancel()
	if err := b.ctl.CreateACLs(ctx, acls); err != nil {
		for _, i := range idx {
			resp.Results[i].ErrorCode, resp.Results[i].ErrorMessage = errorCode(err), errorMessage(err)
		}
	}
	return resp
}

func (b *Broker) handleDeleteACLs(c *call, req *kmsg.DeleteACLsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.DeleteACLsResponse)
	resp.Results = make([]kmsg.DeleteACLsResponseResult, len(req.Filters))
	for i := range resp.Results {
		resp.Results[i] = kmsg.NewDeleteACLsResponseResult()
	}
	if code := kerr.ClusterAuthorizationFailed.Code; !b.aclsEnabled() || !b.clusterAllowed(c, aclAlter) {
		if !b.aclsEnabled() {
			code = kerr.SecurityDisabled.Code
		}
		for i := range resp.Results {
			resp.Results[i].ErrorCode = code
		}
		return resp
	}
	filters := make([]quorum.ACLFilter, len(req.Filters))
	for i, f := range req.Filters {
		filters[i] = quorum.ACLFilter{
			ResourceType: int8(f.ResourceType), ResourceName: f.ResourceName, PatternType: int8(f.ResourcePatternType),
			Principal: f.Principal, Host: f.Host, Operation: int8(f.Operation), Permission: int8(f.PermissionType),
		}
		if req.Version == 0 {
			filters[i].PatternType = patLiteral
		}
	}
	ctx, cancel := context.WithTimeout(b.ctx, securityTimeout)
	defer cancel()
	matched, err := b.ctl.DeleteACLs(ctx, filters)
	for i := range resp.Results {
		r := &resp.Results[i]
		if err != nil {
			r.ErrorCode, r.ErrorMessage = errorCode(err), errorMessage(err)
			continue
		}
		if i >= len(matched) {
			continue
		}
		for _, a := range matched[i] {
			m := kmsg.NewDeleteACLsResponseResultMatchingACL()
			m.ResourceType, m.ResourceName, m.ResourcePatternType = kmsg.ACLResourceType(a.ResourceType), a.ResourceName, kmsg.ACLResourcePatternType(a.PatternType)
			m.Principal, m.Host, m.Operation, m.PermissionType = a.Principal, a.Host, kmsg.ACLOperation(a.Operation), kmsg.ACLPermissionType(a.Permission)
			r.MatchingACLs = append(r.MatchingACLs, m)
		}
	}
	return resp
}

func (b *Broker) handleDescribeUserScram(c *call, req *kmsg.DescribeUserSCRAMCredentialsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.DescribeUserSCRAMCredentialsResponse)
	if !b.clusterAllowed(c, aclDescribe) {
		resp.ErrorCode = kerr.ClusterAuthorizationFailed.Code
		return resp
	}
	users := b.ctl.Metadata().SecurityOf().Users
	var names []string
	if req.Users == nil {
		for u := range users {
			names = append(names, u)
		}
		slices.Sort(names)
	} else {
		for _, u := range req.Users {
			names = append(names, u.Name)
		}
	}
	seen := map[string]int{}
	for _, n := range names {
		seen[n]++
	}
	for _, n := range names {
		r := kmsg.NewDescribeUserSCRAMCredentialsResponseResult()
		r.User = n
		creds, ok := users[n]
		switch {
		case seen[n] > 1:
			r.ErrorCode, r.ErrorMessage = kerr.DuplicateResource.Code, kmsg.StringPtr("Cannot describe SCRAM credentials for the same user twice in a single request: "+n)
		case !ok:
			r.ErrorCode, r.ErrorMessage = kerr.ResourceNotFound.Code, kmsg.StringPtr("Attempt to describe a user credential that does not exist: "+n)
		}
		for _, cr := range creds {
			if r.ErrorCode != 0 {
				break
			}
			ci := kmsg.NewDescribeUserSCRAMCredentialsResponseResultCredentialInfo()
			ci.Mechanism, ci.Iterations = scramMechanismCode(cr.Mechanism), cr.Iterations
			r.CredentialInfos = append(r.CredentialInfos, ci)
		}
		resp.Results = append(resp.Results, r)
	}
	return resp
}

func (b *Broker) handleAlterUserScram(c *call, req *kmsg.AlterUserSCRAMCredentialsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.AlterUserSCRAMCredentialsResponse)
	allowed := b.clusterAllowed(c, aclAlter)
	// One result per user, as Kafka: the first error for a user stands, the rest of its changes are not made.
	codes := map[string]int16{}
	msgs := map[string]string{}
	var order []string
	fail := func(user string, code int16, msg string) {
		if codes[user] == 0 {
			codes[user], msgs[user] = code, msg
		}
	}
	note := func(user string) {
		if _, ok := codes[user]; !ok {
			codes[user] = 0
			order = append(order, user)
		}
	}
	pairs := map[[2]string]int{}
	for _, d := range req.Deletions {
		note(d.Name)
		pairs[[2]string{d.Name, scramMechanismName(d.Mechanism)}]++
	}
	for _, u := range req.Upsertions {
		note(u.Name)
		pairs[[2]string{u.Name, scramMechanismName(u.Mechanism)}]++
	}
	sec := b.ctl.Metadata().SecurityOf()
	for _, d := range req.Deletions {
		mech := scramMechanismName(d.Mechanism)
		switch {
		case !allowed:
			fail(d.Name, kerr.ClusterAuthorizationFailed.Code, "")
		case d.Name == "":
			fail(d.Name, kerr.UnacceptableCredential.Code, "Username must not be empty")
		case mech == "":
			fail(d.Name, kerr.UnsupportedSaslMechanism.Code, "Unknown SCRAM mechanism")
		case pairs[[2]string{d.Name, mech}] > 1:
			fail(d.Name, kerr.DuplicateResource.Code, "A user credential cannot be altered twice in the same request")
		default:
			if _, ok := sec.Credential(d.Name, mech); !ok {
				fail(d.Name, kerr.ResourceNotFound.Code, "Attempt to delete a user credential that does not exist")
			}
		}
	}
	for _, u := range req.Upsertions {
		mech := scramMechanismName(u.Mechanism)
		switch {
		case !allowed:
			fail(u.Name, kerr.ClusterAuthorizationFailed.Code, "")
		case u.Name == "":
			fail(u.Name, kerr.UnacceptableCredential.Code, "Username must not be empty")
		case mech == "":
			fail(u.Name, kerr.UnsupportedSaslMechanism.Code, "Unknown SCRAM mechanism")
		case u.Iterations < ScramMinIterations || u.Iterations > ScramMaxIterations:
			fail(u.Name, kerr.UnacceptableCredential.Code, fmt.Sprintf("Iterations must be between %d and %d", ScramMinIterations, ScramMaxIterations))
		case len(u.Salt) == 0 || len(u.SaltedPassword) == 0:
			// Kafka takes any non-empty salted password (HMAC keys may have any length); one that is not
			// the mechanism's PBKDF2 output simply never matches a login.
			fail(u.Name, kerr.UnacceptableCredential.Code, "Salt and salted password must not be empty")
		case pairs[[2]string{u.Name, mech}] > 1:
			fail(u.Name, kerr.DuplicateResource.Code, "A user credential cannot be altered twice in the same request")
		}
	}
	ctx, cancel := context.WithTimeout(b.ctx, securityTimeout)
	defer cancel()
	for _, d := range req.Deletions {
		if codes[d.Name] == 0 {
			if _, err := b.ctl.DeleteScramCredential(ctx, d.Name, scramMechanismName(d.Mechanism)); err != nil {
				fail(d.Name, errorCode(err), err.Error())
			}
		}
	}
	for _, u := range req.Upsertions {
		if codes[u.Name] == 0 {
			mech := scramMechanismName(u.Mechanism)
			cred := scramCredentialFromSalted(mech, u.Salt, u.SaltedPassword, u.Iterations)
			if _, err := b.ctl.SetScramCredentials(ctx, u.Name, []quorum.ScramCredential{cred}, false); err != nil {
				fail(u.Name, errorCode(err), err.Error())
			}
		}
	}
	for _, user := range order {
		r := kmsg.NewAlterUserSCRAMCredentialsResponseResult()
		r.User, r.ErrorCode = user, codes[user]
		if m := msgs[user]; m != "" {
			r.ErrorMessage = kmsg.StringPtr(m)
		}
		resp.Results = append(resp.Results, r)
	}
	return resp
}
