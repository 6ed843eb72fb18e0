package quorum

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	sm "github.com/lni/dragonboat/v4/statemachine"
)

// The cluster's security metadata lives in the controller group beside topics and brokers, so every
// broker sees the same SCRAM credentials and ACLs and they survive restarts and controller failover:
// users (SCRAM credentials: salt, iterations, StoredKey and ServerKey, never a password) and ACLs.

// ScramCredential is one user's credential for one SCRAM mechanism (RFC 5802): what the server
// needs to verify a client proof and prove itself, derived from the password, never the password.
type ScramCredential struct {
	Mechanism  string // SCRAM-SHA-256 or SCRAM-SHA-512
	Iterations int32
	Salt       []byte
	StoredKey  []byte // H(ClientKey)
	ServerKey  []byte
}

// ACL is one access control entry bound to a resource pattern, with Kafka's codes (kmsg's
// ACLResourceType, ACLResourcePatternType, ACLOperation, ACLPermissionType).
type ACL struct {
	ResourceType int8
	ResourceName string
	PatternType  int8
	Principal    string // "User:alice", "User:*"
	Host         string // "*" or an address
	Operation    int8
	Permission   int8
}

// Kafka's codes the controller needs to match ACL filters.
const (
	ACLAny       int8 = 1 // resource type, pattern type, operation, permission: any
	PatternMatch int8 = 2
	PatternLit   int8 = 3
	PatternPre   int8 = 4
)

// ACLFilter selects ACLs (DescribeAcls, DeleteAcls), as Kafka's AclBindingFilter: nil names match
// any, ACLAny codes match any, PatternMatch matches the patterns that apply to ResourceName.
type ACLFilter struct {
	ResourceType int8
	ResourceName *string
	PatternType  int8
	Principal    *string
	Host         *string
	Operation    int8
	Permission   int8
}

// Matches reports whether a is selected by f.
func (f ACLFilter) Matches(a ACL) bool {
	if f.ResourceType != ACLAny && f.ResourceType != a.ResourceType {
		return false
	}
	switch f.PatternType {
	case ACLAny:
		if f.ResourceName != nil && *f.ResourceName != a.ResourceName {
			return false
		}
	case PatternMatch:
		if f.ResourceName != nil {
			n := *f.ResourceName
			switch a.PatternType {
			case PatternLit:
				if a.ResourceName != n && a.ResourceName != "*" {
					return false
				}
			case PatternPre:
				if !strings.HasPrefix(n, a.ResourceName) {
					return false
				}
			default:
				return false
			}
		}
	default:
		if f.PatternType != a.PatternType || f.ResourceName != nil && *f.ResourceName != a.ResourceName {
			return false
		}
	}
	return (f.Principal == nil || *f.Principal == a.Principal) &&
		(f.Host == nil || *f.Host == a.Host) &&
		(f.Operation == ACLAny || f.Operation == a.Operation) &&
		(f.Permission == ACLAny || f.Permission == a.Permission)
}

// Security is the replicated security metadata. Immutable once published, like Metadata: a change
// makes a new *Security, so its pointer tells a cached authorization decision whether it is stale.
type Security struct {
	Users map[string][]ScramCredential `json:",omitempty"`
	ACLs  []ACL                        `json:",omitempty"`
}

// Credential returns the user's credential for mechanism.
func (s *Security) Credential(user, mechanism string) (ScramCredential, bool) {
	if s == nil {
		return ScramCredential{}, false
	}
	for _, c := range s.Users[user] {
		if c.Mechanism == mechanism {
			return c, true
		}
	}
	return ScramCredential{}, false
}

// SecurityOf returns the metadata's security part (never nil).
func (md *Metadata) SecurityOf() *Security {
	if md == nil || md.Security == nil {
		return emptySecurity
	}
	return md.Security
}

var emptySecurity = &Security{}

// The security ops' fields sit under "sec" on the wire (one nested object each); an entry without
// it is answered "no security payload".
const noSecurityPayload = "no security payload"

// SetScramCredentials creates or replaces user's credentials, one per mechanism. With ifAbsent it
// does nothing when the user has any credential already (the bootstrap user at start); created
// reports whether it wrote.
func (c *Controller) SetScramCredentials(ctx context.Context, user string, creds []ScramCredential, ifAbsent bool) (created bool, err error) {
	res, _, err := c.propose(ctx, &scramUpsertCmd{Sec: &scramUpsertArgs{User: user, Creds: creds, IfAbsent: ifAbsent}})
	return err == nil && string(res.Data) != "exists", err
}

type scramUpsertCmd struct {
	Sec *scramUpsertArgs `json:"sec,omitempty"`
}

type scramUpsertArgs struct {
	User     string            `json:"user,omitempty"`
	Creds    []ScramCredential `json:"creds,omitempty"`
	IfAbsent bool              `json:"if_absent,omitempty"` // upsert only when the user has no credential
}

func (*scramUpsertCmd) op() string { return "scram_upsert" }

func (cmd *scramUpsertCmd) validate() error {
	if cmd.Sec == nil {
		return fmt.Errorf("%w: %s", ErrInvalidRequest, noSecurityPayload)
	}
	for _, cred := range cmd.Sec.Creds {
		if cmd.Sec.User == "" || cred.Mechanism == "" || len(cred.StoredKey) == 0 {
			return fmt.Errorf("%w: empty user or credential", ErrInvalidRequest)
		}
	}
	return nil
}

// apply answers "exists" when IfAbsent found a credential.
func (cmd *scramUpsertCmd) apply(md *Metadata) (*Metadata, sm.Result) {
	sc := cmd.Sec
	if sc == nil {
		return nil, invalid(noSecurityPayload)
	}
	if len(sc.Creds) == 0 || sc.User == "" {
		return nil, invalid("no credential")
	}
	old := md.SecurityOf()
	if sc.IfAbsent && len(old.Users[sc.User]) > 0 {
		return nil, sm.Result{Data: []byte("exists")}
	}
	users := maps.Clone(old.Users)
	if users == nil {
		users = map[string][]ScramCredential{}
	}
	creds := slices.Clone(users[sc.User])
	for _, cr := range sc.Creds {
		creds = append(slices.DeleteFunc(creds, func(c ScramCredential) bool { return c.Mechanism == cr.Mechanism }), cr)
	}
	users[sc.User] = creds
	return withSecurity(md, &Security{Users: users, ACLs: old.ACLs}), sm.Result{}
}

// DeleteScramCredential removes user's credential for mechanism; found is false when there was none.
func (c *Controller) DeleteScramCredential(ctx context.Context, user, mechanism string) (found bool, err error) {
	res, retried, err := c.propose(ctx, &scramDeleteCmd{Sec: &scramDeleteArgs{User: user, Mechanism: mechanism}})
	return err == nil && (string(res.Data) != "notfound" || retried), err
}

type scramDeleteCmd struct {
	noChecks
	Sec *scramDeleteArgs `json:"sec,omitempty"`
}

type scramDeleteArgs struct {
	User      string `json:"user,omitempty"`
	Mechanism string `json:"mechanism,omitempty"`
}

func (*scramDeleteCmd) op() string { return "scram_delete" }

// apply answers "notfound" when the user had no such credential.
func (cmd *scramDeleteCmd) apply(md *Metadata) (*Metadata, sm.Result) {
	sc := cmd.Sec
	if sc == nil {
		return nil, invalid(noSecurityPayload)
	}
	old := md.SecurityOf()
	creds := old.Users[sc.User]
	kept := slices.DeleteFunc(slices.Clone(creds), func(c ScramCredential) bool { return c.Mechanism == sc.Mechanism })
	if len(kept) == len(creds) {
		return nil, sm.Result{Data: []byte("notfound")}
	}
	users := maps.Clone(old.Users)
	if len(kept) == 0 {
		delete(users, sc.User)
	} else {
		users[sc.User] = kept
	}
	return withSecurity(md, &Security{Users: users, ACLs: old.ACLs}), sm.Result{}
}

// CreateACLs adds ACLs (an ACL already present is not added twice).
func (c *Controller) CreateACLs(ctx context.Context, acls []ACL) error {
	_, _, err := c.propose(ctx, &createACLsCmd{Sec: &createACLsArgs{ACLs: acls}})
	return err
}

type createACLsCmd struct {
	noChecks
	Sec *createACLsArgs `json:"sec,omitempty"`
}

type createACLsArgs struct {
	ACLs []ACL `json:"acls,omitempty"`
}

func (*createACLsCmd) op() string { return "create_acls" }

func (cmd *createACLsCmd) apply(md *Metadata) (*Metadata, sm.Result) {
	if cmd.Sec == nil {
		return nil, invalid(noSecurityPayload)
	}
	old := md.SecurityOf()
	acls := slices.Clone(old.ACLs)
	for _, a := range cmd.Sec.ACLs {
		if !slices.Contains(acls, a) {
			acls = append(acls, a)
		}
	}
	return withSecurity(md, &Security{Users: old.Users, ACLs: acls}), sm.Result{}
}

// DeleteACLs removes the ACLs each filter matches and returns them per filter.
func (c *Controller) DeleteACLs(ctx context.Context, filters []ACLFilter) ([][]ACL, error) {
	res, _, err := c.propose(ctx, &deleteACLsCmd{Sec: &deleteACLsArgs{Filters: filters}})
	if err != nil {
		return nil, err
	}
	var out [][]ACL
	if err := json.Unmarshal(res.Data, &out); err != nil {
		return nil, fmt.Errorf("quorum: delete ACLs result: %w", err)
	}
	return out, nil
}

type deleteACLsCmd struct {
	noChecks
	Sec *deleteACLsArgs `json:"sec,omitempty"`
}

type deleteACLsArgs struct {
	Filters []ACLFilter `json:"filters,omitempty"`
}

func (*deleteACLsCmd) op() string { return "delete_acls" }

// apply answers the ACLs each filter matched (JSON, one list per filter).
func (cmd *deleteACLsCmd) apply(md *Metadata) (*Metadata, sm.Result) {
	if cmd.Sec == nil {
		return nil, invalid(noSecurityPayload)
	}
	filters := cmd.Sec.Filters
	old := md.SecurityOf()
	matched := make([][]ACL, len(filters))
	kept := make([]ACL, 0, len(old.ACLs))
	for _, a := range old.ACLs {
		hit := false
		for i, f := range filters {
			if f.Matches(a) {
				matched[i] = append(matched[i], a)
				hit = true
			}
		}
		if !hit {
			kept = append(kept, a)
		}
	}
	data, _ := json.Marshal(matched)
	return withSecurity(md, &Security{Users: old.Users, ACLs: kept}), sm.Result{Data: data}
}

// withSecurity returns md with sec (a new *Security: its pointer tells cached decisions they are stale).
func withSecurity(md *Metadata, sec *Security) *Metadata {
	next := *md
	next.Security = sec
	return &next
}
