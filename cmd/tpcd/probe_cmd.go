package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/tpcd/tpcd/rpc"
)

// ProbeCmd asks a node's metrics listener whether it is ready (or alive),
// for orchestrators whose probes cannot send the node's token: a
// Kubernetes exec probe runs it in the node's container, whose
// environment already holds the token (deploy/kubernetes).
type ProbeCmd struct {
	Addr          string        `arg:"" help:"HOST:PORT of the node's --metrics-addr."`
	Path          string        `env:"-" help:"What to ask: /readyz (replayed its log, databases answering) or /healthz (the process runs)." enum:"/readyz,/healthz" default:"/readyz"`
	AuthToken     string        `name:"auth-token" help:"A token the node accepts (its --auth-token, --client-token or --peer-token); default: TPCD_AUTH_TOKEN, else TPCD_PEER_TOKEN, else TPCD_CLIENT_TOKEN, as the node itself reads them." placeholder:"TOKEN"`
	AuthTokenFile string        `name:"auth-token-file" help:"Read --auth-token from this file." placeholder:"FILE" type:"path"`
	TLSCA         string        `name:"tls-ca" help:"Ask over TLS, verifying the node against these PEM CA certificates." placeholder:"FILE" type:"path"`
	TLSCert       string        `name:"tls-cert" help:"Present this PEM certificate (a node with --tls-ca requires one)." placeholder:"FILE" type:"path"`
	TLSKey        string        `name:"tls-key" help:"PEM private key of --tls-cert." placeholder:"FILE" type:"path"`
	Timeout       time.Duration `env:"-" help:"Give up after this long." default:"2s"`
}

// Help explains the exit status.
func (ProbeCmd) Help() string {
	return `Prints what the node answered and exits 0 when it answered 200, 1 otherwise
(not ready, unreachable, refused). For example, as a Kubernetes readiness probe:

    tpcd probe 127.0.0.1:9100`
}

// Run asks once.
func (c *ProbeCmd) Run(ctx context.Context) error {
	token, err := c.token()
	if err != nil {
		return err
	}
	client := &http.Client{Timeout: c.Timeout}
	scheme := "http"
	if c.TLSCA != "" || c.TLSCert != "" {
		cfg, err := rpc.TLSFiles{Cert: c.TLSCert, Key: c.TLSKey, CA: c.TLSCA}.ClientTLS()
		if err != nil {
			return err
		}
		client.Transport = &http.Transport{TLSClientConfig: cfg}
		scheme = "https"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+c.Addr+c.Path, nil)
	if err != nil {
		return fmt.Errorf("probe %s: %w", c.Addr, err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("probe %s%s: %w", c.Addr, c.Path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	answer := strings.TrimSpace(string(body))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s%s: %s: %s", c.Addr, c.Path, resp.Status, answer)
	}
	_, err = fmt.Println(answer)
	return err
}

// token is the token to present: the flag, its file, or the first of the
// environment variables a node reads its tokens from.
func (c *ProbeCmd) token() (string, error) {
	if c.AuthTokenFile != "" {
		b, err := os.ReadFile(c.AuthTokenFile)
		if err != nil {
			return "", fmt.Errorf("--auth-token-file: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	if c.AuthToken != "" {
		return c.AuthToken, nil
	}
	for _, env := range []string{"TPCD_PEER_TOKEN", "TPCD_CLIENT_TOKEN"} {
		if v := os.Getenv(env); v != "" {
			return v, nil
		}
	}
	return "", nil
}
