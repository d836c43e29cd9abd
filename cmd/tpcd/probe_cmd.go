package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

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
	StandbyReady  bool          `name:"standby-ready" env:"-" help:"Ask /readyz?standby=ready: a coordinator waiting as a standby (--lease) counts as ready. For orchestrators that must see every healthy replica ready before they roll the next one or drain a machine; clients reach the serving coordinator anyway, a standby's RPC port being closed."`
	UntilSettled  time.Duration `name:"until-settled" env:"-" help:"Instead of one question, ask the node's /metrics every second until it holds no transaction in doubt (tpcd_transactions_in_doubt 0), for at most this long; exit 1 if some still are. For a participant's preStop hook: a stopping pod first lets the commits it carries finish, as far as the time allows (the node keeps taking work meanwhile)." placeholder:"D"`
	Timeout       time.Duration `env:"-" help:"Give up after this long (one question)." default:"2s"`
}

// Help explains the exit status.
func (ProbeCmd) Help() string {
	return `Prints what the node answered and exits 0 when it answered 200, 1 otherwise
(not ready, unreachable, refused). For example, as a Kubernetes readiness probe:

    tpcd probe 127.0.0.1:9100

With --until-settled D it asks the node's /metrics every second instead,
and exits 0 once the node holds no transaction in doubt, 1 if it still
does after D: a participant's preStop hook (deploy/kubernetes).`
}

// Validate refuses flags that would be ignored.
func (c *ProbeCmd) Validate() error {
	switch {
	case c.StandbyReady && c.UntilSettled > 0:
		return errors.New("--standby-ready and --until-settled: give one (--until-settled reads /metrics, not /readyz)")
	case c.StandbyReady && c.Path != "/readyz":
		return fmt.Errorf("--standby-ready asks /readyz, not %s", c.Path)
	}
	return nil
}

// Run asks once, or until the node is settled.
func (c *ProbeCmd) Run(ctx context.Context) error {
	token, err := c.token()
	if err != nil {
		return err
	}
	n, err := c.node(token)
	if err != nil {
		return err
	}
	defer n.client.CloseIdleConnections()
	if c.UntilSettled > 0 {
		return c.waitSettled(ctx, n)
	}
	path := c.Path
	if c.StandbyReady {
		path += "?standby=ready"
	}
	body, err := n.get(ctx, path)
	if err != nil {
		return err
	}
	_, err = fmt.Println(strings.TrimSpace(string(body)))
	return err
}

// probedNode is how every question reaches the node: one HTTP client, so
// that repeated questions share its connection.
type probedNode struct {
	client *http.Client
	base   string // scheme://addr
	addr   string
	token  string
}

func (c *ProbeCmd) node(token string) (*probedNode, error) {
	n := &probedNode{client: &http.Client{Timeout: c.Timeout}, base: "http://" + c.Addr, addr: c.Addr, token: token}
	if c.TLSCA == "" && c.TLSCert == "" {
		return n, nil
	}
	cfg, err := rpc.TLSFiles{Cert: c.TLSCert, Key: c.TLSKey, CA: c.TLSCA}.ClientTLS()
	if err != nil {
		return nil, fmt.Errorf("probe %s: %w", c.Addr, err)
	}
	n.client.Transport = &http.Transport{TLSClientConfig: cfg}
	n.base = "https://" + c.Addr
	return n, nil
}

// get asks path once; anything but 200 is an error that says what the
// node answered.
func (n *probedNode) get(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.base+path, nil)
	if err != nil {
		return nil, fmt.Errorf("probe %s: %w", n.addr, err)
	}
	if n.token != "" {
		req.Header.Set("Authorization", "Bearer "+n.token)
	}
	resp, err := n.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("probe %s%s: %w", n.addr, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxMetricsBody))
	if resp.StatusCode != http.StatusOK {
		answer := strings.TrimSpace(string(body[:min(len(body), 4096)]))
		return nil, fmt.Errorf("%s%s: %s: %s", n.addr, path, resp.Status, answer)
	}
	if err != nil {
		return nil, fmt.Errorf("probe %s%s: %w", n.addr, path, err)
	}
	return body, nil
}

// maxMetricsBody bounds what is read of an answer: a node's /metrics is a
// few tens of kilobytes.
const maxMetricsBody = 4 << 20

// waitSettled asks /metrics every second until the node holds nothing in
// doubt. A node that cannot be asked is not taken for settled.
func (c *ProbeCmd) waitSettled(ctx context.Context, node *probedNode) error {
	ctx, cancel := context.WithTimeout(ctx, c.UntilSettled)
	defer cancel()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var last error
	for {
		n, err := node.inDoubt(ctx)
		if err == nil && n == 0 {
			_, err = fmt.Println("settled: nothing in doubt")
			return err
		}
		// A question the deadline cut short says less than the one
		// before it.
		if last == nil || ctx.Err() == nil {
			last = err
			if err == nil {
				last = fmt.Errorf("%g transactions in doubt", n)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not settled within %v: %w", c.Addr, c.UntilSettled, last)
		case <-tick.C:
		}
	}
}

// inDoubt reads the gauge tpcd_transactions_in_doubt from the node's
// /metrics.
func (n *probedNode) inDoubt(ctx context.Context) (float64, error) {
	body, err := n.get(ctx, "/metrics")
	if err != nil {
		return 0, err
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("%s/metrics: %w", n.addr, err)
	}
	f := families["tpcd_transactions_in_doubt"]
	switch {
	case f == nil:
		return 0, fmt.Errorf("%s/metrics has no tpcd_transactions_in_doubt (a tpcd node that has recovered, whose state is fresh, has it)", n.addr)
	case f.GetType() != dto.MetricType_GAUGE || len(f.GetMetric()) != 1:
		return 0, fmt.Errorf("%s/metrics: tpcd_transactions_in_doubt is not one gauge (%v, %d series)", n.addr, f.GetType(), len(f.GetMetric()))
	}
	return f.GetMetric()[0].GetGauge().GetValue(), nil
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
