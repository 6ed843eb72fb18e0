package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// adminFlags are the flags every subcommand that talks to a running broker shares: where it is, how to
// log in (TLS, SASL) and how to print.
type adminFlags struct {
	bootstrap string
	asJSON    bool
	timeout   time.Duration

	tls          bool
	tlsCA        string
	saslMech     string
	saslUser     string
	saslPassFile string
}

func (a *adminFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&a.bootstrap, "bootstrap", "localhost:9092", "broker addresses, host:port,...")
	fs.BoolVar(&a.asJSON, "json", false, "print JSON instead of a table")
	fs.DurationVar(&a.timeout, "timeout", 30*time.Second, "how long to wait for the cluster")
	fs.BoolVar(&a.tls, "tls", false, "connect with TLS")
	fs.StringVar(&a.tlsCA, "tls-ca", "", "PEM file of the CA that signed the broker's certificate (implies --tls; empty: the system's)")
	fs.StringVar(&a.saslMech, "sasl-mechanism", "", "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (empty: no SASL)")
	fs.StringVar(&a.saslUser, "sasl-user", "", "SASL user")
	fs.StringVar(&a.saslPassFile, "sasl-password-file", "", "file holding the SASL password (kept off the command line)")
}

// clientOpts are the franz-go options for the flags: seeds, TLS and SASL.
func (a *adminFlags) clientOpts() ([]kgo.Opt, error) {
	opts := []kgo.Opt{kgo.SeedBrokers(strings.Split(a.bootstrap, ",")...)}
	if a.tls || a.tlsCA != "" {
		conf := &tls.Config{MinVersion: tls.VersionTLS12}
		if a.tlsCA != "" {
			pem, err := os.ReadFile(a.tlsCA)
			if err != nil {
				return nil, err
			}
			conf.RootCAs = x509.NewCertPool()
			if !conf.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("--tls-ca %s: no PEM certificate", a.tlsCA)
			}
		}
		opts = append(opts, kgo.DialTLSConfig(conf))
	}
	if a.saslMech != "" {
		if a.saslUser == "" || a.saslPassFile == "" {
			return nil, errors.New("--sasl-mechanism needs --sasl-user and --sasl-password-file")
		}
		pass, err := readSecret(a.saslPassFile)
		if err != nil {
			return nil, err
		}
		var m sasl.Mechanism
		switch strings.ToUpper(a.saslMech) {
		case "PLAIN":
			m = plain.Auth{User: a.saslUser, Pass: pass}.AsMechanism()
		case "SCRAM-SHA-256":
			m = scram.Auth{User: a.saslUser, Pass: pass}.AsSha256Mechanism()
		case "SCRAM-SHA-512":
			m = scram.Auth{User: a.saslUser, Pass: pass}.AsSha512Mechanism()
		default:
			return nil, fmt.Errorf("--sasl-mechanism %q: want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", a.saslMech)
		}
		opts = append(opts, kgo.SASL(m))
	}
	return opts, nil
}

// client is a franz-go client for the flags plus extra options.
func (a *adminFlags) client(extra ...kgo.Opt) (*kgo.Client, error) {
	opts, err := a.clientOpts()
	if err != nil {
		return nil, err
	}
	return kgo.NewClient(append(opts, extra...)...)
}

// connect returns a kadm client and a context bounded by --timeout; call the returned func when done.
func (a *adminFlags) connect() (*kadm.Client, context.Context, func(), error) {
	cl, err := a.client()
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), a.timeout)
	return kadm.NewClient(cl), ctx, func() { cancel(); cl.Close() }, nil
}

// readSecret reads a password file: its first line, without the line end.
func readSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s, _, _ := strings.Cut(string(b), "\n")
	s = strings.TrimSuffix(s, "\r")
	if s == "" {
		return "", fmt.Errorf("%s: empty password", path)
	}
	return s, nil
}

func writeJSON(out io.Writer, v any) error {
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
