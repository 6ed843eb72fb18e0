package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// `sluice users` against a broker with SASL and ACLs, logged in as the bootstrap super user through
// the shared --sasl-* flags: a user set with both SCRAM mechanisms is listed and can log in; once
// deleted it cannot.
func TestUsersCLI(t *testing.T) {
	b := startSecureBroker(t, "--authorizer", "acl", "--super-users", "User:"+adminUser)
	as := func(user, pass string) []string {
		return []string{"--bootstrap", b.Addr, "--sasl-mechanism", "SCRAM-SHA-512", "--sasl-user", user,
			"--sasl-password-file", passwordFile(t, pass), "--timeout", "10s"}
	}
	admin := as(adminUser, adminPass)
	var out bytes.Buffer
	if err := usersCmd(append(admin, "set", "alice", "--password-file", passwordFile(t, "alice-pw")), &out); err != nil {
		t.Fatalf("users set: %v\n%s", err, out.String())
	}
	out.Reset()
	if err := usersCmd(append(admin, "list", "--json"), &out); err != nil {
		t.Fatalf("users list: %v", err)
	}
	var rows []userRow
	if err := json.Unmarshal(out.Bytes(), &rows); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	mechs := map[string]bool{}
	for _, r := range rows {
		if r.User == "alice" && r.Iterations == 8192 {
			mechs[r.Mechanism] = true
		}
	}
	if len(mechs) != 2 {
		t.Fatalf("alice's credentials: %+v", rows)
	}
	// alice logs in (cluster status needs only an authenticated Metadata).
	out.Reset()
	if err := clusterCmd(append(as("alice", "alice-pw"), "status"), &out); err != nil {
		t.Fatalf("alice's login: %v\n%s", err, out.String())
	}
	if err := clusterCmd(append(as("alice", "wrong"), "status"), &out); err == nil {
		t.Fatal("a wrong password logged in")
	}
	out.Reset()
	if err := usersCmd(append(admin, "delete", "alice"), &out); err != nil {
		t.Fatalf("users delete: %v\n%s", err, out.String())
	}
	if err := clusterCmd(append(as("alice", "alice-pw"), "status"), &out); err == nil {
		t.Fatal("a deleted user logged in")
	}
	if err := usersCmd(append(admin, "set", "bob"), &out); err == nil {
		t.Fatal("set without --password-file was accepted")
	}
}

// `sluice acls`: an ACL created for a user lets that user write the topic (through `sluice produce`
// logged in as them), is listed with Kafka's names, and once deleted the write is refused again.
func TestACLsCLI(t *testing.T) {
	b := startSecureBroker(t, "--authorizer", "acl", "--super-users", "User:"+adminUser)
	as := func(user, pass string) []string {
		return []string{"--bootstrap", b.Addr, "--sasl-mechanism", "SCRAM-SHA-512", "--sasl-user", user,
			"--sasl-password-file", passwordFile(t, pass), "--timeout", "10s"}
	}
	admin := as(adminUser, adminPass)
	var out bytes.Buffer
	if err := usersCmd(append(admin, "set", "carol", "--password-file", passwordFile(t, "carol-pw")), &out); err != nil {
		t.Fatalf("users set: %v", err)
	}
	b.createTopic("audited", 1, nil)
	write := func() error {
		var o bytes.Buffer
		return produceCmd(append(as("carol", "carol-pw"), "audited"), strings.NewReader("entry\n"), &o)
	}
	if err := write(); err == nil {
		t.Fatal("carol wrote without an ACL")
	}
	acl := []string{"--allow", "User:carol", "--operation", "write,describe", "--topic", "audit", "--pattern", "prefixed"}
	out.Reset()
	if err := aclsCmd(append(append(admin, "create"), acl...), &out); err != nil {
		t.Fatalf("acls create: %v\n%s", err, out.String())
	}
	if err := write(); err != nil {
		t.Fatalf("carol's write with the ACL: %v", err)
	}
	out.Reset()
	if err := aclsCmd(append(admin, "list", "--json"), &out); err != nil {
		t.Fatalf("acls list: %v", err)
	}
	var rows []aclRow
	if err := json.Unmarshal(out.Bytes(), &rows); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	ops := map[string]bool{}
	for _, r := range rows {
		if r.Principal == "User:carol" && r.Name == "audit" && r.Pattern == "PREFIXED" && r.Permission == "ALLOW" && r.Resource == "TOPIC" {
			ops[r.Operation] = true
		}
	}
	if !ops["WRITE"] || !ops["DESCRIBE"] {
		t.Fatalf("listed ACLs: %+v", rows)
	}
	out.Reset()
	if err := aclsCmd(append(admin, "delete", "--allow", "User:carol", "--topic", "audit"), &out); err != nil {
		t.Fatalf("acls delete: %v\n%s", err, out.String())
	}
	if err := write(); err == nil {
		t.Fatal("carol wrote after the ACL was deleted")
	}
	if err := aclsCmd(append(admin, "create", "--allow", "User:carol", "--topic", "x"), &out); err == nil {
		t.Fatal("create without --operation was accepted")
	}
}
