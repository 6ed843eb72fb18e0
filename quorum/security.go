package quorum

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/lni/dragonboat/v4/config"
	sm "github.com/lni/dragonboat/v4/statemachine"
)

// The cluster's security metadata lives in the controller group beside topics and brokers, so every
// broker sees the same SCRAM credentials and ACLs and they survive restarts and controller failover:
// users (SCRAM credentials: salt, iterations, StoredKey and ServerKey, never a password) and ACLs.

// RaftTLS names the PEM files of mutual TLS for Raft traffic between brokers (dragonboat's
// NodeHostConfig.MutualTLS): every broker presents CertFile and accepts peers signed by CAFile.
type RaftTLS struct {
	CAFile, CertFile, KeyFile string
}

// Enabled reports whether Raft traffic runs over TLS.
func (t RaftTLS) Enabled() bool { return t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" }

// Check fails when the files are incomplete or unreadable, with what to fix: dragonboat itself
// would only fail deep in its transport.
func (t RaftTLS) Check() error {
	if !t.Enabled() {
		return nil
	}
	for _, f := range []struct{ flag, path string }{{"ca", t.CAFile}, {"cert", t.CertFile}, {"key", t.KeyFile}} {
		if f.path == "" {
			return fmt.Errorf("raft TLS needs its %s file too (--raft-tls-ca, --raft-tls-cert, --raft-tls-key)", f.flag)
		}
		if _, err := os.Stat(f.path); err != nil {
			return fmt.Errorf("raft TLS %s file: %w", f.flag, err)
		}
	}
	return nil
}

func (t RaftTLS) apply(nhc *config.NodeHostConfig) {
	if !t.Enabled() {
		return
	}
	nhc.MutualTLS = true
	nhc.CAFile, nhc.CertFile, nhc.KeyFile = t.CAFile, t.CertFile, t.KeyFile
}

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

const (
	opScramUpsert = "scram_upsert"
	opScramDelete = "scram_delete"
	opCreateACLs  = "create_acls"
	opDeleteACLs  = "delete_acls"
)

// securityCommand is the payload of the security ops.
type securityCommand struct {
	User      string            `json:"user,omitempty"`
	Mechanism string            `json:"mechanism,omitempty"`
	Creds     []ScramCredential `json:"creds,omitempty"`
	IfAbsent  bool              `json:"if_absent,omitempty"` // upsert only when the user has no credential
	ACLs      []ACL             `json:"acls,omitempty"`
	Filters   []ACLFilter       `json:"filters,omitempty"`
}

// SetScramCredentials creates or replaces user's credentials, one per mechanism. With ifAbsent it
// does nothing when the user has any credential already (the bootstrap user at start); created
// reports whether it wrote.
func (c *Controller) SetScramCredentials(ctx context.Context, user string, creds []ScramCredential, ifAbsent bool) (created bool, err error) {
	for _, cred := range creds {
		if user == "" || cred.Mechanism == "" || len(cred.StoredKey) == 0 {
			return false, fmt.Errorf("%w: empty user or credential", ErrInvalidRequest)
		}
	}
	res, _, err := c.propose(ctx, command{Op: opScramUpsert, Sec: &securityCommand{User: user, Creds: creds, IfAbsent: ifAbsent}})
	return err == nil && string(res.Data) != "exists", err
}

// DeleteScramCredential removes user's credential for mechanism; found is false when there was none.
func (c *Controller) DeleteScramCredential(ctx context.Context, user, mechanism string) (found bool, err error) {
	res, retried, err := c.propose(ctx, command{Op: opScramDelete, Sec: &securityCommand{User: user, Mechanism: mechanism}})
	return err == nil && (string(res.Data) != "notfound" || retried), err
}

// CreateACLs adds ACLs (an ACL already present is not added twice).
func (c *Controller) CreateACLs(ctx context.Context, acls []ACL) error {
	_, _, err := c.propose(ctx, command{Op: opCreateACLs, Sec: &securityCommand{ACLs: acls}})
	return err
}

// DeleteACLs removes the ACLs each filter matches and returns them per filter.
func (c *Controller) DeleteACLs(ctx context.Context, filters []ACLFilter) ([][]ACL, error) {
	res, _, err := c.propose(ctx, command{Op: opDeleteACLs, Sec: &securityCommand{Filters: filters}})
	if err != nil {
		return nil, err
	}
	var out [][]ACL
	if err := json.Unmarshal(res.Data, &out); err != nil {
		return nil, fmt.Errorf("quorum: delete ACLs result: %w", err)
	}
	return out, nil
}

// applySecurity applies a security op; ok is false for ops that are not one.
func applySecurity(md *Metadata, cmd *command) (next *Metadata, res sm.Result, ok bool) {
	switch cmd.Op {
	case opScramUpsert, opScramDelete, opCreateACLs, opDeleteACLs:
	default:
		return nil, sm.Result{}, false
	}
	sc := cmd.Sec
	if sc == nil {
		return nil, invalid("no security payload"), true
	}
	old := md.SecurityOf()
	sec := &Security{Users: old.Users, ACLs: old.ACLs}
	switch cmd.Op {
	case opScramUpsert:
		if len(sc.Creds) == 0 || sc.User == "" {
			return nil, invalid("no credential"), true
		}
		if sc.IfAbsent && len(old.Users[sc.User]) > 0 {
			return nil, sm.Result{Data: []byte("exists")}, true
		}
		sec.Users = copyUsers(old.Users)
		creds := slices.Clone(sec.Users[sc.User])
		for _, cr := range sc.Creds {
			creds = append(slices.DeleteFunc(creds, func(c ScramCredential) bool { return c.Mechanism == cr.Mechanism }), cr)
		}
		sec.Users[sc.User] = creds
	case opScramDelete:
		creds := old.Users[sc.User]
		kept := slices.DeleteFunc(slices.Clone(creds), func(c ScramCredential) bool { return c.Mechanism == sc.Mechanism })
		if len(kept) == len(creds) {
			return nil, sm.Result{Data: []byte("notfound")}, true
		}
		sec.Users = copyUsers(old.Users)
		if len(kept) == 0 {
			delete(sec.Users, sc.User)
		} else {
			sec.Users[sc.User] = kept
		}
	case opCreateACLs:
		sec.ACLs = slices.Clone(old.ACLs)
		for _, a := range sc.ACLs {
			if !slices.Contains(sec.ACLs, a) {
				sec.ACLs = append(sec.ACLs, a)
			}
		}
	case opDeleteACLs:
		matched := make([][]ACL, len(sc.Filters))
		kept := make([]ACL, 0, len(old.ACLs))
		for _, a := range old.ACLs {
			hit := false
			for i, f := range sc.Filters {
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
		sec.ACLs = kept
		res = sm.Result{Data: data}
	}
	n := *md
	n.Security = sec
	return &n, res, true
}

func copyUsers(m map[string][]ScramCredential) map[string][]ScramCredential {
	out := make(map[string][]ScramCredential, len(m)+1)
	for k, v := range m {
		out[k] = v
	}
	return out
}
