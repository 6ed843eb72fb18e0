package broker

import (
	"context"
	"testing"

	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/sluicebroker/sluice/quorum"
)

// scramRun runs franz-go's SCRAM client against our server and reports whether both sides accepted.
func scramRun(t *testing.T, mech, storedPass, clientPass string) (ok bool) {
	t.Helper()
	cred, err := NewScramCredential(mech, storedPass, ScramDefaultIterations)
	if err != nil {
		t.Fatal(err)
	}
	srv := &scramServer{mech: mech, lookup: func(u string) (quorum.ScramCredential, bool) { return cred, u == "al,i=ce" }}
	a := scram.Auth{User: "al,i=ce", Pass: clientPass}
	m := a.AsSha256Mechanism()
	if mech == MechScramSHA512 {
		m = a.AsSha512Mechanism()
	}
	sess, msg, err := m.Authenticate(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		out, done, err := srv.next(msg)
		if err != nil {
			return false
		}
		cdone, next, err := sess.Challenge(out)
		if err != nil {
			t.Fatalf("client refused the server: %v", err)
		}
		if done != cdone {
			t.Fatalf("server done %v, client done %v", done, cdone)
		}
		if done {
			return srv.user == "al,i=ce"
		}
		msg = next
	}
	t.Fatal("exchange did not finish")
	return false
}

// TestScramServer: our RFC 5802 server against franz-go's client (an independent implementation),
// with a user name that needs saslname escaping; a wrong password fails; PLAIN checks passwords
// against the stored SCRAM credential.
func TestScramServer(t *testing.T) {
	for _, mech := range []string{MechScramSHA256, MechScramSHA512} {
		if !scramRun(t, mech, "pencil", "pencil") {
			t.Fatalf("%s: the right password was refused", mech)
		}
		if scramRun(t, mech, "pencil", "pen") {
			t.Fatalf("%s: a wrong password was accepted", mech)
		}
		cred, _ := NewScramCredential(mech, "pencil", ScramMinIterations)
		if !checkPassword(cred, "pencil") || checkPassword(cred, "Pencil") {
			t.Fatalf("%s: checkPassword", mech)
		}
	}
}

// FuzzSASL: any pair of client messages to a SCRAM server, or any PLAIN message, is answered or
// refused, never a panic (seeds in testdata/fuzz/FuzzSASL: garbage a client could send).
func FuzzSASL(f *testing.F) {
	for _, s := range [][2]string{
		{"n,,n=user,r=abc", "c=biws,r=abc,p=AAAA"},
		{"n,,n=user,r=abc", "c=biws,r=abcdef,p=" + string(make([]byte, 64))},
		{"p=tls-unique,,n=user,r=x", ""},
		{"y,a=user,n=user,r=x", "c=eSws,r=x,p=="},
		{"n,,n=us=3Der,r=x,ext=1", "r=x"},
		{"\x00user\x00pass", "\x00\x00"},
		{"n,,n==ZZ,r=", ",p="},
	} {
		f.Add([]byte(s[0]), []byte(s[1]))
	}
	cred, _ := NewScramCredential(MechScramSHA256, "pw", ScramMinIterations)
	cred512, _ := NewScramCredential(MechScramSHA512, "pw", ScramMinIterations)
	f.Fuzz(func(t *testing.T, first, final []byte) {
		for _, c := range []quorum.ScramCredential{cred, cred512} {
			srv := &scramServer{mech: c.Mechanism, lookup: func(string) (quorum.ScramCredential, bool) { return c, true }}
			if _, _, err := srv.next(first); err == nil {
				_, done, err := srv.next(final)
				if done && err == nil {
					t.Fatalf("authenticated without the password: %q %q", first, final)
				}
			}
		}
		if user, _, _, err := plainParse(first); err == nil && user == "" {
			t.Fatalf("PLAIN message %q accepted without a user", first)
		}
	})
}
