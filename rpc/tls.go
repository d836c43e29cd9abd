package rpc

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// TLSFiles names the PEM files of a node's TLS setup.
type TLSFiles struct {
	// Cert and Key are this node's certificate (chain) and private key. A
	// server presents them; a client presents them as its client
	// certificate, which is what mutual TLS between nodes needs.
	Cert, Key string
	// CA holds the certificates that sign the peers' certificates. A server
	// given a CA requires every caller to present a certificate it signed
	// (mutual TLS); a client verifies servers against it instead of the
	// system's roots.
	CA string
}

// ServerTLS builds the server side: nil when no certificate is given.
func (f TLSFiles) ServerTLS() (*tls.Config, error) {
	if f.Cert == "" && f.Key == "" {
		if f.CA != "" {
			return nil, errors.New("tls: a CA without a certificate and key: a server needs --tls-cert and --tls-key to serve TLS")
		}
		return nil, nil
	}
	cert, err := f.keyPair()
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if f.CA != "" {
		pool, err := loadPool(f.CA)
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// ClientTLS builds the client side: nil (plain h2c) when neither a CA nor
// a certificate is given.
func (f TLSFiles) ClientTLS() (*tls.Config, error) {
	if f.Cert == "" && f.Key == "" && f.CA == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.Cert != "" || f.Key != "" {
		cert, err := f.keyPair()
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	if f.CA != "" {
		pool, err := loadPool(f.CA)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

func (f TLSFiles) keyPair() (tls.Certificate, error) {
	if f.Cert == "" || f.Key == "" {
		return tls.Certificate{}, errors.New("tls: the certificate and the key go together: give both")
	}
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("tls: load key pair %s, %s: %w", f.Cert, f.Key, err)
	}
	return cert, nil
}

func loadPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tls: read CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("tls: CA file %s holds no PEM certificate", path)
	}
	return pool, nil
}
