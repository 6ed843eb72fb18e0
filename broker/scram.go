package broker

import (
	"bytes"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"

	"github.com/sluicebroker/sluice/quorum"
)

// SCRAM (RFC 5802, RFC 7677) as Kafka's server runs it: a client-first message, a server-first with the
// combined nonce, salt and iterations, a client-final with the proof, a server-final with the server's
// signature. The broker keeps only StoredKey and ServerKey (quorum.ScramCredential), never a password.
// Written here rather than taken from a library: the server side has to accept what librdkafka, the Java
// client, sarama and franz-go send, byte for byte, and it is short.

// SASL mechanism names.
const (
	MechPlain       = "PLAIN"
	MechScramSHA256 = "SCRAM-SHA-256"
	MechScramSHA512 = "SCRAM-SHA-512"
)

// Kafka's ScramMechanism codes (DescribeUserScramCredentials, AlterUserScramCredentials).
func scramMechanismCode(mech string) int8 {
	switch mech {
	case MechScramSHA256:
		return 1
	case MechScramSHA512:
		return 2
	}
	return 0
}

func scramMechanismName(code int8) string {
	switch code {
	case 1:
		return MechScramSHA256
	case 2:
		return MechScramSHA512
	}
	return ""
}

// scramHash returns the mechanism's hash, or nil for a name that is not a SCRAM mechanism.
func scramHash(mech string) func() hash.Hash {
	switch mech {
	case MechScramSHA256:
		return sha256.New
	case MechScramSHA512:
		return sha512.New
	}
	return nil
}

// Kafka's bounds on SCRAM iterations (ScramMechanism.minIterations, and its 16384 maximum).
const (
	ScramMinIterations     = 4096
	ScramMaxIterations     = 16384
	ScramDefaultIterations = 4096
)

// NewScramCredential derives the stored credential for a password: a random salt, then
// SaltedPassword = PBKDF2(password, salt, iterations), and the keys from it.
func NewScramCredential(mech, password string, iterations int) (quorum.ScramCredential, error) {
	h := scramHash(mech)
	if h == nil {
		return quorum.ScramCredential{}, fmt.Errorf("unknown SCRAM mechanism %q", mech)
	}
	salt := make([]byte, 32)
	rand.Read(salt)
	salted, err := pbkdf2.Key(h, password, salt, iterations, h().Size())
	if err != nil {
		return quorum.ScramCredential{}, err
	}
	return scramCredentialFromSalted(mech, salt, salted, int32(iterations)), nil
}

// scramCredentialFromSalted derives StoredKey and ServerKey from a salted password (what
// AlterUserScramCredentials carries).
func scramCredentialFromSalted(mech string, salt, salted []byte, iterations int32) quorum.ScramCredential {
	h := scramHash(mech)
	clientKey := hmacOf(h, salted, []byte("Client Key"))
	stored := h()
	stored.Write(clientKey)
	return quorum.ScramCredential{
		Mechanism:  mech,
		Iterations: iterations,
		Salt:       bytes.Clone(salt),
		StoredKey:  stored.Sum(nil),
		ServerKey:  hmacOf(h, salted, []byte("Server Key")),
	}
}

func hmacOf(h func() hash.Hash, key, msg []byte) []byte {
	m := hmac.New(h, key)
	m.Write(msg)
	return m.Sum(nil)
}

// checkPassword verifies a password against a stored SCRAM credential (PLAIN uses the SCRAM users).
func checkPassword(cred quorum.ScramCredential, password string) bool {
	h := scramHash(cred.Mechanism)
	if h == nil {
		return false
	}
	salted, err := pbkdf2.Key(h, password, cred.Salt, int(cred.Iterations), h().Size())
	if err != nil {
		return false
	}
	want := scramCredentialFromSalted(cred.Mechanism, cred.Salt, salted, cred.Iterations)
	return subtle.ConstantTimeCompare(want.StoredKey, cred.StoredKey) == 1
}

// errScramAuth is every authentication failure the client is told about: Kafka does not say whether
// the user or the password was wrong.
var errScramAuth = errors.New("authentication failed during authentication due to invalid credentials with SASL mechanism")

// scramServer is one server side SCRAM exchange.
type scramServer struct {
	mech   string
	lookup func(user string) (quorum.ScramCredential, bool)

	step            int
	user            string
	cred            quorum.ScramCredential
	gs2Header       string
	clientFirstBare string
	serverFirst     string
	nonce           string
}

// next takes a client message and returns the server's answer; done reports a successful end.
func (s *scramServer) next(msg []byte) (out []byte, done bool, err error) {
	switch s.step {
	case 0:
		s.step = 1
		return s.first(string(msg))
	case 1:
		s.step = 2
		return s.final(string(msg))
	}
	return nil, false, errors.New("SCRAM exchange already finished")
}

func (s *scramServer) first(msg string) ([]byte, bool, error) {
	// gs2-header: "n,," or "y,," (no channel binding); "p=..." asks for binding, which Kafka refuses.
	// An authzid ("a=...") must name the user itself.
	parts := strings.SplitN(msg, ",", 3)
	if len(parts) != 3 || (parts[0] != "n" && parts[0] != "y") {
		return nil, false, errors.New("invalid SCRAM client-first message: channel binding is not supported")
	}
	s.gs2Header = parts[0] + "," + parts[1] + ","
	s.clientFirstBare = parts[2]
	var cnonce string
	for i, attr := range strings.Split(parts[2], ",") {
		k, v, ok := strings.Cut(attr, "=")
		switch {
		case !ok:
			return nil, false, errors.New("invalid SCRAM client-first message")
		case i == 0 && k != "n", i == 1 && k != "r":
			return nil, false, errors.New("invalid SCRAM client-first message: want n= then r=")
		case k == "n":
			u, err := saslName(v)
			if err != nil {
				return nil, false, err
			}
			s.user = u
		case k == "r":
			cnonce = v
		}
		// Later attributes are extensions (Kafka's tokenauth=true among them): ignored.
	}
	if s.user == "" || cnonce == "" {
		return nil, false, errors.New("invalid SCRAM client-first message: no user or nonce")
	}
	if authz := parts[1]; authz != "" {
		a, err := saslName(strings.TrimPrefix(authz, "a="))
		if err != nil || !strings.HasPrefix(authz, "a=") || a != s.user {
			return nil, false, errors.New("SCRAM authorization id must be the user")
		}
	}
	cred, ok := s.lookup(s.user)
	if !ok {
		return nil, false, errScramAuth
	}
	s.cred = cred
	var rnd [24]byte
	rand.Read(rnd[:])
	s.nonce = cnonce + base64.RawStdEncoding.EncodeToString(rnd[:])
	s.serverFirst = "r=" + s.nonce + ",s=" + base64.StdEncoding.EncodeToString(cred.Salt) + ",i=" + strconv.Itoa(int(cred.Iterations))
	return []byte(s.serverFirst), false, nil
}

func (s *scramServer) final(msg string) ([]byte, bool, error) {
	idx := strings.LastIndex(msg, ",p=")
	if idx < 0 {
		return nil, false, errors.New("invalid SCRAM client-final message: no proof")
	}
	withoutProof := msg[:idx]
	proof, err := base64.StdEncoding.DecodeString(msg[idx+3:])
	if err != nil {
		return nil, false, errors.New("invalid SCRAM client-final message: proof is not base64")
	}
	var channel, nonce string
	for _, attr := range strings.Split(withoutProof, ",") {
		k, v, _ := strings.Cut(attr, "=")
		switch k {
		case "c":
			channel = v
		case "r":
			nonce = v
		}
	}
	if cb, err := base64.StdEncoding.DecodeString(channel); err != nil || string(cb) != s.gs2Header {
		return nil, false, errors.New("invalid SCRAM client-final message: channel binding does not match")
	}
	// Kafka's ScramSaslServer checks that the nonce ends with the server's combined nonce, not that
	// it equals it: librdkafka (2.0 at least) sends its client nonce in front of the combined one.
	if !strings.HasSuffix(nonce, s.nonce) {
		return nil, false, errors.New("invalid SCRAM client-final message: nonce does not match")
	}
	h := scramHash(s.cred.Mechanism)
	authMessage := []byte(s.clientFirstBare + "," + s.serverFirst + "," + withoutProof)
	clientSig := hmacOf(h, s.cred.StoredKey, authMessage)
	if len(proof) != len(clientSig) {
		return nil, false, errScramAuth
	}
	clientKey := make([]byte, len(proof))
	for i := range proof {
		clientKey[i] = proof[i] ^ clientSig[i]
	}
	stored := h()
	stored.Write(clientKey)
	if subtle.ConstantTimeCompare(stored.Sum(nil), s.cred.StoredKey) != 1 {
		return nil, false, errScramAuth
	}
	serverSig := hmacOf(h, s.cred.ServerKey, authMessage)
	return []byte("v=" + base64.StdEncoding.EncodeToString(serverSig)), true, nil
}

// saslName decodes RFC 5802's saslname: "=2C" is ',' and "=3D" is '='; any other '=' is invalid.
func saslName(v string) (string, error) {
	if !strings.Contains(v, "=") {
		return v, nil
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] != '=' {
			b.WriteByte(v[i])
			continue
		}
		switch {
		case strings.HasPrefix(v[i:], "=2C"):
			b.WriteByte(',')
		case strings.HasPrefix(v[i:], "=3D"):
			b.WriteByte('=')
		default:
			return "", errors.New("invalid SCRAM user name encoding")
		}
		i += 2
	}
	return b.String(), nil
}
