package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tpcd/tpcd/metrics"
	"github.com/tpcd/tpcd/node"
	"github.com/tpcd/tpcd/rpc"
	"github.com/tpcd/tpcd/statuspage"
)

// SecurityFlags secure a node's RPC. With kong.DefaultEnvars every flag
// also reads TPCD_<NAME> (TPCD_AUTH_TOKEN, ...), which keeps secrets out of
// the process list.
type SecurityFlags struct {
	AuthToken     string `name:"auth-token" help:"Shared secret required on every RPC (Authorization: Bearer). Prefer TPCD_AUTH_TOKEN or --auth-token-file: a flag shows in the process list." placeholder:"TOKEN"`
	AuthTokenFile string `name:"auth-token-file" help:"Read --auth-token from this file (surrounding whitespace dropped)." placeholder:"FILE" type:"path"`
	ClientToken   string `name:"client-token" help:"Token for client methods (begin, exec, ...), instead of --auth-token." placeholder:"TOKEN"`
	PeerToken     string `name:"peer-token" help:"Token for node-to-node methods (tpcd.*), instead of --auth-token; sent to peers too." placeholder:"TOKEN"`
	TLSCert       string `name:"tls-cert" help:"Serve TLS with this PEM certificate (and call peers over TLS, presenting it as client certificate)." placeholder:"FILE" type:"path"`
	TLSKey        string `name:"tls-key" help:"PEM private key of --tls-cert." placeholder:"FILE" type:"path"`
	TLSCA         string `name:"tls-ca" help:"PEM CA certificates: verify peers against them, and require callers to present a certificate they signed (mutual TLS)." placeholder:"FILE" type:"path"`
	MetricsAddr   string `name:"metrics-addr" help:"Serve Prometheus /metrics, /healthz, /readyz (and on the coordinator the status page at /) on this HOST:PORT. Off by default; it has no authentication, so keep it on loopback or a private network." placeholder:"HOST:PORT"`
}

// validate checks the flags without reading any file.
func (f *SecurityFlags) validate() error {
	if f.AuthToken != "" && f.AuthTokenFile != "" {
		return errors.New("--auth-token and --auth-token-file both give the token; use one")
	}
	if (f.TLSCert == "") != (f.TLSKey == "") {
		return errors.New("--tls-cert and --tls-key go together: give both")
	}
	if f.TLSCA != "" && f.TLSCert == "" {
		return errors.New("--tls-ca needs --tls-cert and --tls-key: a node verifying its peers must present a certificate of its own")
	}
	if f.MetricsAddr != "" {
		return checkAddr("metrics-addr", f.MetricsAddr)
	}
	return nil
}

// transport builds the node's RPC security from the flags.
func (f *SecurityFlags) transport() (node.Transport, error) {
	shared := f.AuthToken
	if f.AuthTokenFile != "" {
		b, err := os.ReadFile(f.AuthTokenFile)
		if err != nil {
			return node.Transport{}, fmt.Errorf("--auth-token-file: %w", err)
		}
		if shared = strings.TrimSpace(string(b)); shared == "" {
			return node.Transport{}, fmt.Errorf("--auth-token-file %s is empty", f.AuthTokenFile)
		}
	}
	t := node.Transport{Auth: rpc.Auth{ClientToken: firstOf(f.ClientToken, shared), PeerToken: firstOf(f.PeerToken, shared)}}
	t.PeerToken = t.Auth.PeerToken
	files := rpc.TLSFiles{Cert: f.TLSCert, Key: f.TLSKey, CA: f.TLSCA}
	var err error
	if t.ServerTLS, err = files.ServerTLS(); err != nil {
		return node.Transport{}, err
	}
	if t.ClientTLS, err = files.ClientTLS(); err != nil {
		return node.Transport{}, err
	}
	return t, nil
}

func firstOf(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// securityWarnings lists what an operator should hear about at start: a
// node reachable from other machines that anyone there may drive.
func securityWarnings(addr string, t node.Transport) []string {
	if isLoopback(addr) {
		return nil
	}
	var w []string
	if !t.Auth.Enabled() {
		w = append(w, fmt.Sprintf("listening on %s, which is not a loopback address, without any token: anyone who can reach it can run SQL through tpcd; set --auth-token (or TPCD_AUTH_TOKEN)", addr))
	}
	if t.ServerTLS == nil {
		w = append(w, fmt.Sprintf("listening on %s without TLS: tokens and data cross the network in clear; set --tls-cert and --tls-key", addr))
	}
	return w
}

// isLoopback reports whether HOST:PORT names only this machine.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// observability is a node's metrics listener, started before recovery so
// that /healthz answers and /readyz says "recovering" meanwhile.
type observability struct {
	reg    *prometheus.Registry
	health *metrics.Health
	server *metrics.Server
	addr   string // where it listens
	// coord is set once the coordinator runs; the status page waits for it.
	coord atomic.Pointer[node.Coordinator]
}

// startObservability listens on --metrics-addr; it returns nil when the
// flag is not set. withPage adds the coordinator's status page at /.
func startObservability(addr string, logger *slog.Logger, withPage bool) (*observability, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on --metrics-addr %s: %w", addr, err)
	}
	o := &observability{reg: metrics.NewRegistry(), health: &metrics.Health{}, addr: ln.Addr().String()}
	opts := metrics.ServerOptions{Registry: o.reg, Health: o.health, Logger: logger}
	if withPage {
		opts.Page = statuspage.Handler(func(ctx context.Context) (node.CoordinatorSnapshot, error) {
			c := o.coord.Load()
			if c == nil {
				return node.CoordinatorSnapshot{}, errors.New("the coordinator is still recovering its log")
			}
			return c.Snapshot(ctx)
		}, statuspage.Options{Logger: logger})
	}
	o.server = metrics.Serve(ln, opts)
	logger.Info("metrics listener serving", "addr", ln.Addr().String(), "status_page", withPage)
	return o, nil
}

func (o *observability) close() {
	if o != nil {
		o.server.Close()
	}
}

// coordinatorObserver returns the observer to give the coordinator, nil
// without a metrics listener.
func (o *observability) coordinatorObserver() node.Observer {
	if o == nil {
		return nil
	}
	return metrics.NewCoordinator(o.reg)
}

func (o *observability) participantObserver() node.Observer {
	if o == nil {
		return nil
	}
	return metrics.NewParticipant(o.reg)
}

// coordinatorUp wires the running coordinator's gauges, page and readiness.
func (o *observability) coordinatorUp(c *node.Coordinator, logger *slog.Logger) {
	if o == nil {
		return
	}
	metrics.WatchCoordinator(o.reg, c, logger)
	o.coord.Store(c)
	o.health.SetReady(c.CheckHealth)
}

// participantUp wires the running participant's gauges and readiness.
func (o *observability) participantUp(p *node.Participant, logger *slog.Logger) {
	if o == nil {
		return
	}
	metrics.WatchParticipant(o.reg, p, logger)
	o.health.SetReady(p.CheckHealth)
}
