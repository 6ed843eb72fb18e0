package loadgen

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// Security is how loadgen's clients reach a broker with TLS and/or SASL (the cost of TLS is one of
// the things it measures).
type Security struct {
	TLS           bool   `yaml:"tls" json:"tls,omitempty"`
	TLSCA         string `yaml:"tls_ca" json:"tls_ca,omitempty"` // PEM CA file; empty: the system's roots
	SASLMechanism string `yaml:"sasl_mechanism" json:"sasl_mechanism,omitempty"`
	SASLUser      string `yaml:"sasl_user" json:"sasl_user,omitempty"`
	SASLPassword  string `yaml:"sasl_password" json:"-"` // never written into results
}

func (s *Security) bindFlags(fs *flag.FlagSet) {
	fs.BoolVar(&s.TLS, "tls", s.TLS, "connect with TLS")
	fs.StringVar(&s.TLSCA, "tls-ca", s.TLSCA, "PEM CA file that signed the broker's certificate (implies -tls)")
	fs.StringVar(&s.SASLMechanism, "sasl-mechanism", s.SASLMechanism, "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (empty: no SASL)")
	fs.StringVar(&s.SASLUser, "sasl-user", s.SASLUser, "SASL user")
	fs.StringVar(&s.SASLPassword, "sasl-password", s.SASLPassword, "SASL password")
}

// opts are the kgo options of the security settings.
func (s Security) opts() ([]kgo.Opt, error) {
	var opts []kgo.Opt
	if s.TLS || s.TLSCA != "" {
		conf := &tls.Config{MinVersion: tls.VersionTLS12}
		if s.TLSCA != "" {
			pem, err := os.ReadFile(s.TLSCA)
			if err != nil {
				return nil, err
			}
			conf.RootCAs = x509.NewCertPool()
			if !conf.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("%s: no PEM certificate", s.TLSCA)
			}
		}
		opts = append(opts, kgo.DialTLSConfig(conf))
	}
	switch strings.ToUpper(s.SASLMechanism) {
	case "":
	case "PLAIN":
		opts = append(opts, kgo.SASL(plain.Auth{User: s.SASLUser, Pass: s.SASLPassword}.AsMechanism()))
	case "SCRAM-SHA-256":
		opts = append(opts, kgo.SASL(scram.Auth{User: s.SASLUser, Pass: s.SASLPassword}.AsSha256Mechanism()))
	case "SCRAM-SHA-512":
		opts = append(opts, kgo.SASL(scram.Auth{User: s.SASLUser, Pass: s.SASLPassword}.AsSha512Mechanism()))
	default:
		return nil, fmt.Errorf("unknown SASL mechanism %q", s.SASLMechanism)
	}
	return opts, nil
}

// securityOpts are the workload's security options; Validate has checked they build.
func securityOpts(w *Workload) []kgo.Opt {
	opts, _ := w.Security.opts()
	return opts
}
