package main

import (
	"bytes"
	"encoding/json"
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
