package broker

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/sluicebroker/sluice/netio"
	"github.com/sluicebroker/sluice/quorum"
)

// Security: who a connection is (its principal: SASL user, TLS client certificate or ANONYMOUS) and
// what it may do (authz.go). Off by default: with a nil Config.Security every connection is
// User:ANONYMOUS and every request is allowed, as before.

// SecurityConfig is the broker's SASL and authorization settings.
type SecurityConfig struct {
	// Mechanisms, when not empty, makes SASL required on the SASL_PLAINTEXT and SASL_SSL listeners
	// (netio.Options.SecurityProtocol), and on listeners that name no protocol: a connection there may
	// send only ApiVersions, SaslHandshake and SaslAuthenticate until it has authenticated with one of
	// these. PLAINTEXT and SSL listeners never ask for SASL.
	Mechanisms []string
	// SuperUsers are principals ("User:alice") that every ACL check allows.
	SuperUsers []string
	// ACL: enforce ACLs (--authorizer acl): a request is allowed only when an ACL allows it and none
	// denies it (Kafka's allow.everyone.if.no.acl.found=false).
	ACL bool
	// AllowEveryoneIfNoACL is allow.everyone.if.no.acl.found=true: a resource no ACL applies to (of any
	// principal or operation) is open to everyone; one with ACLs follows them.
	AllowEveryoneIfNoACL bool
	// InterBroker is how this broker authenticates to the others (WriteTxnMarkers): a SCRAM-SHA-512
	// user, normally the bootstrap user. Empty: inter-broker requests do not authenticate.
	InterBrokerUser, InterBrokerPassword string
	// ReauthMax is connections.max.reauth.ms (KIP-368): a SASL session lasts this long, then the
	// client must re-authenticate on its connection (SaslHandshake, SaslAuthenticate again) or the
	// connection is closed at its next request. 0: sessions never expire.
	ReauthMax time.Duration
	// InterBrokerTLS is how this broker reaches a broker that listens with TLS only (the Raft
	// certificate as client certificate, the Raft CA as roots); nil: no TLS between brokers.
	InterBrokerTLS *tls.Config
}

// ValidMechanism reports whether the broker serves this SASL mechanism.
func ValidMechanism(m string) bool {
	return m == MechPlain || m == MechScramSHA256 || m == MechScramSHA512
}

// Kafka's security protocols, the listeners' netio.Options.SecurityProtocol.
const (
	ProtocolPlaintext     = "PLAINTEXT"
	ProtocolSSL           = "SSL"
	ProtocolSASLPlaintext = "SASL_PLAINTEXT"
	ProtocolSASLSSL       = "SASL_SSL"
)

// saslRequired reports whether a connection must authenticate with SASL: on a SASL_* listener (or
// one that names no protocol) when mechanisms are configured.
func (b *Broker) saslRequired(nc *netio.Conn) bool {
	if b.sec == nil || len(b.sec.Mechanisms) == 0 {
		return false
	}
	switch nc.SecurityProtocol() {
	case ProtocolPlaintext, ProtocolSSL:
		return false
	}
	return true
}

// anonymous is the principal of an unauthenticated connection, as in Kafka.
const anonymous = "User:ANONYMOUS"

// connState is the broker's state of one connection under security (netio.Conn.Value).
type connState struct {
	mu            sync.Mutex
	principal     string
	host          string // the client's address, for ACL host matching
	authenticated bool   // SASL done (or not required)
	failed        bool   // SASL failed: the connection closes
	reauth        bool   // a re-authentication (KIP-368) is under way
	expires       time.Time
	mechanism     string // chosen by SaslHandshake
	scram         *scramServer
	// rawTokens: SaslHandshake v0 chose the mechanism, so the exchange continues in raw SASL tokens
	// (length-prefixed, no Kafka header) instead of SaslAuthenticate requests.
	rawTokens atomic.Bool

	authz authzCache

	quota    connQuota    // resolved client quotas (throttle.go)
	throttle connThrottle // muted after a throttled response (throttle.go)
}

// connState returns the connection's state, made at its first request. HandleRequest calls for one
// connection never run concurrently, so the first one may create it without a race.
func (b *Broker) connState(nc *netio.Conn) *connState {
	if v, ok := nc.Value().(*connState); ok {
		return v
	}
	st := &connState{principal: anonymous, authenticated: !b.saslRequired(nc)}
	if a, ok := nc.RemoteAddr.(*net.TCPAddr); ok {
		st.host = a.IP.String()
	}
	if certs := nc.PeerCertificates(); len(certs) > 0 {
		// Kafka's default principal builder: the certificate's subject, RFC 2253 ("CN=alice,O=acme").
		st.principal = "User:" + certs[0].Subject.String()
	}
	nc.SetValue(st)
	return st
}

// admitConn decides whether a request may run before authentication; false means the connection
// was told to close. Called on the event loop for every request when security is configured.
func (b *Broker) admitConn(c *call) bool {
	st := b.connState(c.nr.Conn)
	st.mu.Lock()
	ok, failed := st.authenticated, st.failed
	handshook := st.mechanism != ""
	expired := !st.expires.IsZero() && time.Now().After(st.expires)
	st.mu.Unlock()
	saslAPI := c.hdr.key == apiVersionsKey || c.hdr.key == int16(kmsg.SASLHandshake) || c.hdr.key == int16(kmsg.SASLAuthenticate)
	switch {
	case failed:
		c.nr.CloseConn("request after a failed SASL authentication")
		return false
	case ok && expired && !saslAPI:
		// KIP-368: the session ended without re-authentication.
		c.nr.CloseConn("SASL session expired (connections.max.reauth.ms)")
		return false
	case ok:
		return true
	}
	switch c.hdr.key {
	case apiVersionsKey, int16(kmsg.SASLHandshake):
		return true
	case int16(kmsg.SASLAuthenticate):
		if handshook {
			return true
		}
	}
	// Kafka closes a connection that sends anything else before authenticating.
	c.nr.CloseConn(fmt.Sprintf("%s request before SASL authentication", kmsg.NameForKey(c.hdr.key)))
	return false
}

func init() {
	// SaslHandshake v0 is followed by raw SASL tokens outside Kafka's request framing (rawSaslToken);
	// v1 by SaslAuthenticate requests. librdkafka needs v0 advertised to use SASL at all.
	register(kmsg.SASLHandshake, 0, 1, func(b *Broker, c *call) kmsg.Response {
		return b.handleSaslHandshake(c, c.req.(*kmsg.SASLHandshakeRequest))
	})
	// v1 adds the session lifetime (KIP-368: ReauthMax, 0 when sessions never expire), v2 is flexible.
	register(kmsg.SASLAuthenticate, 0, 2, func(b *Broker, c *call) kmsg.Response {
		b.handleSaslAuthenticate(c, c.req.(*kmsg.SASLAuthenticateRequest))
		return nil
	})
}

// handleSaslHandshake picks the connection's mechanism.
func (b *Broker) handleSaslHandshake(c *call, req *kmsg.SASLHandshakeRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.SASLHandshakeResponse)
	if !b.saslRequired(c.nr.Conn) {
		resp.ErrorCode = kerr.IllegalSaslState.Code // SASL is not enabled on this listener, as Kafka answers
		return resp
	}
	resp.SupportedMechanisms = slices.Clone(b.sec.Mechanisms)
	st := b.connState(c.nr.Conn)
	st.mu.Lock()
	defer st.mu.Unlock()
	switch {
	case st.authenticated && req.Version >= 1 && !st.reauth:
		// KIP-368 re-authentication: the same mechanism, and (checked at the end) the same principal.
		if req.Mechanism != st.mechanism {
			resp.ErrorCode = kerr.UnsupportedSaslMechanism.Code
			break
		}
		st.reauth, st.scram = true, nil
	case st.authenticated || st.mechanism != "":
		resp.ErrorCode = kerr.IllegalSaslState.Code
	case !slices.Contains(b.sec.Mechanisms, req.Mechanism):
		resp.ErrorCode = kerr.UnsupportedSaslMechanism.Code
	default:
		st.mechanism = req.Mechanism
		if req.Version == 0 {
			st.rawTokens.Store(true)
		}
	}
	if resp.ErrorCode != 0 {
		st.failed = true // Kafka closes the connection after a failed handshake
	}
	return resp
}

// handleSaslAuthenticate runs one step of the chosen mechanism. A failure is answered with
// SASL_AUTHENTICATION_FAILED, then the connection closes.
func (b *Broker) handleSaslAuthenticate(c *call, req *kmsg.SASLAuthenticateRequest) {
	resp := req.ResponseKind().(*kmsg.SASLAuthenticateResponse)
	if !b.saslRequired(c.nr.Conn) {
		resp.ErrorCode = kerr.IllegalSaslState.Code
		b.respond(c.nr, c.hdr, resp)
		return
	}
	st := b.connState(c.nr.Conn)
	st.mu.Lock()
	out, done, user, err := b.saslStep(st, req.SASLAuthBytes)
	switch {
	case err != nil:
		st.failed = true
		resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
		msg := err.Error()
		if errors.Is(err, errScramAuth) {
			msg += " " + st.mechanism
		}
		resp.ErrorMessage = &msg
	case done && st.reauth && st.principal != "User:"+user:
		st.failed = true
		resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
		resp.ErrorMessage = kmsg.StringPtr("Cannot change principals during re-authentication")
		err = errors.New("re-authentication as another principal")
	case done:
		st.authenticated, st.reauth = true, false
		st.principal = "User:" + user
		st.scram = nil
		if b.sec.ReauthMax > 0 {
			st.expires = time.Now().Add(b.sec.ReauthMax)
			if req.Version >= 1 {
				resp.SessionLifetimeMillis = b.sec.ReauthMax.Milliseconds()
			}
		}
	}
	mech := st.mechanism
	st.mu.Unlock()
	resp.SASLAuthBytes = out
	if err != nil {
		// Never the secret: the user name is the most the log says.
		b.log.Info("SASL authentication failed", "remote", c.nr.Conn.RemoteAddr, "mechanism", mech, "user", user, "err", err)
		b.respondThenClose(c, resp)
		return
	}
	b.respond(c.nr, c.hdr, resp)
}

// saslStep advances the connection's SASL exchange. Called with st.mu held.
func (b *Broker) saslStep(st *connState, msg []byte) (out []byte, done bool, user string, err error) {
	if st.authenticated && !st.reauth {
		return nil, false, "", errors.New("already authenticated")
	}
	sec := func() *quorum.Security { return b.ctl.Metadata().SecurityOf() }
	switch st.mechanism {
	case MechPlain:
		u, pass, _, err := plainParse(msg)
		if err != nil {
			return nil, false, "", err
		}
		user = u
		s := sec()
		cred, ok := s.Credential(user, MechScramSHA256)
		if !ok {
			cred, ok = s.Credential(user, MechScramSHA512)
		}
		if !ok || !checkPassword(cred, pass) {
			return nil, false, user, errors.New("authentication failed: invalid username or password")
		}
		return nil, true, user, nil
	case MechScramSHA256, MechScramSHA512:
		if st.scram == nil {
			mech := st.mechanism
			st.scram = &scramServer{mech: mech, lookup: func(u string) (quorum.ScramCredential, bool) { return sec().Credential(u, mech) }}
		}
		out, done, err = st.scram.next(msg)
		return out, done, st.scram.user, err
	}
	return nil, false, "", errors.New("no SASL mechanism chosen")
}

// rawSaslToken serves a frame that is a raw SASL token (after SaslHandshake v0): the answer is the
// server's token, length-prefixed; a failure closes the connection, as Kafka does. It reports
// whether the frame was one.
func (b *Broker) rawSaslToken(nr *netio.Request) bool {
	st, ok := nr.Conn.Value().(*connState)
	if !ok || !st.rawTokens.Load() {
		return false
	}
	st.mu.Lock()
	if st.authenticated {
		st.rawTokens.Store(false)
		st.mu.Unlock()
		return false
	}
	out, done, user, err := b.saslStep(st, nr.Frame)
	if err != nil {
		st.failed = true
	} else if done {
		st.authenticated, st.principal, st.scram = true, "User:"+user, nil
	}
	st.mu.Unlock()
	if err != nil {
		b.log.Info("SASL authentication failed", "remote", nr.Conn.RemoteAddr, "user", user, "err", err)
		nr.CloseConn("SASL authentication failed")
		return true
	}
	buf := binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(out)), uint32(len(out)))
	nr.Respond(&netio.Response{Parts: []netio.Part{{Bytes: append(buf, out...)}}})
	return true
}

// plainParse splits a PLAIN message (RFC 4616): authzid NUL authcid NUL password, the authzid empty
// or the user itself.
func plainParse(msg []byte) (user, password, authzid string, err error) {
	parts := strings.Split(string(msg), "\x00")
	if len(parts) != 3 || parts[1] == "" || (parts[0] != "" && parts[0] != parts[1]) {
		return "", "", "", errors.New("invalid PLAIN message")
	}
	return parts[1], parts[2], parts[0], nil
}

// respondThenClose answers and closes the connection once the answer is written.
func (b *Broker) respondThenClose(c *call, resp kmsg.Response) {
	buf := appendResponseHeader(nil, c.hdr.correlationID, resp.IsFlexible())
	buf = resp.AppendTo(buf)
	binary.BigEndian.PutUint32(buf, uint32(len(buf)-4))
	conn := c.nr.Conn
	c.nr.Respond(&netio.Response{Parts: []netio.Part{{Bytes: buf}}, OnDone: conn.Close})
}

// interBrokerAuth authenticates a connection to another broker (SCRAM-SHA-512 as InterBrokerUser);
// nothing when no inter-broker user is set.
func (b *Broker) interBrokerAuth(ctx context.Context, rt func(kmsg.Request, kmsg.Response) error) error {
	if b.sec == nil || b.sec.InterBrokerUser == "" {
		return nil
	}
	return saslClient(ctx, rt, InterBrokerMechanism(b.sec.Mechanisms), b.sec.InterBrokerUser, b.sec.InterBrokerPassword)
}

// InterBrokerMechanism is the mechanism a broker authenticates to the others with: the strongest
// of those enabled.
func InterBrokerMechanism(enabled []string) string {
	for _, m := range []string{MechScramSHA512, MechScramSHA256} {
		if slices.Contains(enabled, m) {
			return m
		}
	}
	return MechPlain
}

// saslClient authenticates as user over rt (SaslHandshake v1, then SaslAuthenticate until done),
// with franz-go's client side of the mechanism.
func saslClient(ctx context.Context, rt func(kmsg.Request, kmsg.Response) error, mech, user, password string) error {
	hs := kmsg.NewPtrSASLHandshakeRequest()
	hs.Version, hs.Mechanism = 1, mech
	hsResp := kmsg.NewPtrSASLHandshakeResponse()
	if err := rt(hs, hsResp); err != nil {
		return err
	}
	if err := kerr.ErrorForCode(hsResp.ErrorCode); err != nil {
		return err
	}
	sess, msg, err := ClientMechanism(mech, user, password).Authenticate(ctx, "")
	if err != nil {
		return err
	}
	for {
		req := kmsg.NewPtrSASLAuthenticateRequest()
		req.Version, req.SASLAuthBytes = 1, msg
		resp := kmsg.NewPtrSASLAuthenticateResponse()
		if err := rt(req, resp); err != nil {
			return err
		}
		if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
			return err
		}
		done, next, err := sess.Challenge(resp.SASLAuthBytes)
		if err != nil || done {
			return err
		}
		msg = next
	}
}

// ClientMechanism is franz-go's client side of a mechanism (the broker's own connections).
func ClientMechanism(mech, user, password string) sasl.Mechanism {
	switch mech {
	case MechScramSHA512:
		return scram.Auth{User: user, Pass: password}.AsSha512Mechanism()
	case MechScramSHA256:
		return scram.Auth{User: user, Pass: password}.AsSha256Mechanism()
	}
	return plain.Auth{User: user, Pass: password}.AsMechanism()
}

// interBrokerTLS is the client TLS configuration for brokers that listen with TLS only.
func (b *Broker) interBrokerTLS() *tls.Config {
	if b.sec == nil {
		return nil
	}
	return b.sec.InterBrokerTLS
}
