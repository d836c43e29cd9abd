package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tpcd/tpcd/activation"
	"github.com/tpcd/tpcd/metrics"
	"github.com/tpcd/tpcd/node"
	"github.com/tpcd/tpcd/rpc"
	"github.com/tpcd/tpcd/statuspage"
)

// SecurityFlags secure a node's RPC. With kong.DefaultEnvars every flag
// also reads TPCD_<NAME> (TPCD_AUTH_TOKEN, ...), which keeps secrets out of
// the process list.
type SecurityFlags struct {
	AuthToken     string `name:"auth-token" help:"Shared secret required on every RPC (Authorization: Bearer), for both clients and peers. Prefer TPCD_AUTH_TOKEN or --auth-token-file: a flag shows in the process list." placeholder:"TOKEN"`
	AuthTokenFile string `name:"auth-token-file" help:"Read --auth-token from this file (surrounding whitespace dropped)." placeholder:"FILE" type:"path"`
	ClientToken   string `name:"client-token" help:"Token for client methods (begin, exec, ...), instead of --auth-token. Alone it is refused: node-to-node methods need a peer token (or mutual TLS) too." placeholder:"TOKEN"`
	PeerToken     string `name:"peer-token" help:"Token for node-to-node methods (tpcd.*), instead of --auth-token; sent to peers too. Required (or --auth-token, or mutual TLS) when --host is not a loopback address." placeholder:"TOKEN"`
	TLSCert       string `name:"tls-cert" help:"Serve TLS with this PEM certificate (and call peers over TLS, presenting it as client certificate). The metrics listener serves TLS with it too." placeholder:"FILE" type:"path"`
	TLSKey        string `name:"tls-key" help:"PEM private key of --tls-cert." placeholder:"FILE" type:"path"`
	TLSCA         string `name:"tls-ca" help:"PEM CA certificates: verify peers against them, and require callers to present a certificate they signed (mutual TLS)." placeholder:"FILE" type:"path"`
	Insecure      bool   `help:"Serve node-to-node methods (tpcd.*) without a peer token or mutual TLS where that is refused: on an address that is not loopback, or beside a client token alone. Anyone who can reach the node can then run SQL and decide transactions through it; a warning says so at start."`
	MetricsAddr   string `name:"metrics-addr" help:"Serve Prometheus /metrics, /healthz, /readyz (and on the coordinator the status page at /) on this HOST:PORT, with the RPC port's tokens and TLS. Off by default." placeholder:"HOST:PORT"`
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

// listen is what a node command does before it opens its databases. It
// listens on host first: whether peers must authenticate depends on the
// address bound, and a taken port should fail before any database starts.
// Then it secures the node's RPC for that address and starts the metrics
// listener (with the coordinator's status page if coordinator). The caller
// closes both; once serving, the node closes ln itself, and closing it
// again is harmless.
func (f *SecurityFlags) listen(host string, logger *slog.Logger, coordinator bool) (net.Listener, node.Transport, *observability, error) {
	ln, err := activation.Listen("tcp", host)
	if err != nil {
		return nil, node.Transport{}, nil, fmt.Errorf("listen on --host %s: %w", host, err)
	}
	transport, obs, err := f.observe(host, ln.Addr(), logger, coordinator)
	if err != nil {
		ln.Close()
		return nil, node.Transport{}, nil, err
	}
	return ln, transport, obs, nil
}

// observe builds the node's RPC security for the address bound (or to be
// bound) for host and starts its metrics listener.
func (f *SecurityFlags) observe(host string, bound net.Addr, logger *slog.Logger, coordinator bool) (node.Transport, *observability, error) {
	transport, warnings, err := f.secure(host, bound)
	if err != nil {
		return node.Transport{}, nil, err
	}
	for _, w := range warnings {
		logger.Warn(w)
	}
	obs, err := startObservability(f.MetricsAddr, logger, coordinator, transport)
	if err != nil {
		return node.Transport{}, nil, err
	}
	return transport, obs, nil
}

// secure builds the RPC security of a node from the flags, applies the
// peer rule (peerAccess) and lists what the operator should hear about at
// start. host is --host as given, for messages; bound is the address the
// node's listener bound, which decides whether it is loopback.
func (f *SecurityFlags) secure(host string, bound net.Addr) (node.Transport, []string, error) {
	t, err := f.transport()
	if err != nil {
		return node.Transport{}, nil, err
	}
	loopback := isLoopback(bound)
	warnings, err := peerAccess(host, loopback, &t, f.TLSCA != "", f.Insecure)
	if err != nil {
		return node.Transport{}, nil, err
	}
	return t, append(warnings, securityWarnings(host, loopback, t, f.TLSCA != "")...), nil
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

// peerAccess applies the rule for node-to-node methods (tpcd.*), which run
// SQL and decide transactions, to a node listening on addr:
//
//   - with a peer token or mutual TLS, peers prove who they are: served;
//   - without either, on a loopback address and with no token at all:
//     served to anyone on this machine, as the seed project's command
//     lines on localhost need;
//   - without either, on any other address, or beside a client token
//     alone (whose callers must not reach the peer methods, and whose
//     peers have no token to present): refused to start, unless insecure,
//     which serves them without credentials and says so.
//
// It sets t.Auth.PeersWithoutToken where the peer methods are served
// without a token although a client token is set.
func peerAccess(addr string, loopback bool, t *node.Transport, mutualTLS, insecure bool) (warnings []string, err error) {
	if t.Auth.PeerToken != "" || mutualTLS {
		// Certificates prove peers; a client token alone must not close
		// the peer methods to them.
		t.Auth.PeersWithoutToken = t.Auth.PeerToken == "" && t.Auth.ClientToken != ""
		if insecure {
			warnings = append(warnings, "--insecure changes nothing: node-to-node methods are authenticated here by a peer token or mutual TLS")
		}
		return warnings, nil
	}
	clientOnly := t.Auth.ClientToken != ""
	if loopback && !clientOnly {
		if insecure {
			warnings = append(warnings, fmt.Sprintf("--insecure changes nothing on %s: without any token a node on a loopback address serves node-to-node methods to this machine anyway", addr))
		}
		return warnings, nil
	}
	var why string
	if clientOnly {
		why = "the only token is a client token (--client-token)"
	} else {
		why = fmt.Sprintf("--host %s is not a loopback address", addr)
	}
	if !insecure {
		return nil, fmt.Errorf("%s, and there is no peer token or mutual TLS: node-to-node methods (tpcd.*), which run SQL and decide transactions, "+
			"would be served to anyone who can reach the node. Give a peer token (--peer-token, or --auth-token for clients and peers; "+
			"or TPCD_PEER_TOKEN, TPCD_AUTH_TOKEN) to every node, or mutual TLS (--tls-cert, --tls-key, --tls-ca), or --insecure to serve them without credentials", why)
	}
	t.Auth.PeersWithoutToken = clientOnly
	return []string{fmt.Sprintf("--insecure: %s, and node-to-node methods (tpcd.*) are served without a peer token or mutual TLS: "+
		"anyone who can reach %s can run SQL and decide transactions through this node", why, addr)}, nil
}

// securityWarnings lists what else an operator should hear about at start:
// a node reachable from other machines that any of them may drive as a
// client, or whose traffic crosses the network in clear.
func securityWarnings(addr string, loopback bool, t node.Transport, mutualTLS bool) []string {
	if loopback {
		return nil
	}
	var w []string
	if t.Auth.ClientToken == "" && !mutualTLS {
		w = append(w, fmt.Sprintf("listening on %s, which is not a loopback address, with no client token: anyone who can reach it can run SQL through tpcd; set --client-token or --auth-token (or TPCD_AUTH_TOKEN)", addr))
	}
	if t.ServerTLS == nil {
		w = append(w, fmt.Sprintf("listening on %s without TLS: tokens and data cross the network in clear; set --tls-cert and --tls-key", addr))
	}
	return w
}

// isLoopback reports whether a listener's address reaches only this
// machine. It is the address bound, not the name given: "localhost:9990"
// binds 127.0.0.1, while "0.0.0.0:9990" binds every interface.
func isLoopback(addr net.Addr) bool {
	tcp, ok := addr.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
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
	// adopted are the slots the coordinator serves for others that
	// stopped (adoptSlots), for its gauges and status page.
	adopted adoptedSlots
}

// startObservability listens on --metrics-addr; it returns nil when the
// flag is not set. withPage adds the coordinator's status page at /. The
// listener accepts the callers the RPC port accepts (t's tokens and TLS).
func startObservability(addr string, logger *slog.Logger, withPage bool, t node.Transport) (*observability, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := activation.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on --metrics-addr %s: %w", addr, err)
	}
	if !isLoopback(ln.Addr()) && !t.Auth.Enabled() && t.ServerTLS == nil {
		logger.Warn(fmt.Sprintf("metrics listener on %s, which is not a loopback address, without a token or TLS: anyone who can reach it can read the node's metrics and status page", ln.Addr()))
	}
	o := &observability{reg: metrics.NewRegistry(), health: &metrics.Health{}, addr: ln.Addr().String()}
	opts := metrics.ServerOptions{Registry: o.reg, Health: o.health, Logger: logger, Auth: t.Auth, TLS: t.ServerTLS}
	if withPage {
		opts.Page = statuspage.Handler(func() (node.CoordinatorSnapshot, error) {
			c := o.coord.Load()
			if c == nil {
				return node.CoordinatorSnapshot{}, errors.New("the coordinator is still recovering its log")
			}
			return c.LatestSnapshot()
		}, statuspage.Options{Logger: logger, Adopted: o.adoptedForPage})
	}
	o.server = metrics.Serve(ln, opts)
	logger.Info("metrics listener serving", "addr", ln.Addr().String(), "status_page", withPage, "tls", t.ServerTLS != nil, "auth", t.Auth.Enabled())
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

// adoptedObserver is the observer of a slot this coordinator adopted: it
// counts into the metrics of main, the node's own coordinator's observer.
func adoptedObserver(main node.Observer) node.Observer {
	if m, ok := main.(*metrics.Coordinator); ok {
		return m.Sibling()
	}
	return nil
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
	metrics.WatchCoordinator(o.reg, c, logger, o.adoptedCoordinators)
	o.coord.Store(c)
	o.health.SetReady(c.Health)
}

// standby makes /readyz say why a coordinator waiting for the log's slot
// is not ready (and ready to /readyz?standby=ready); waiting false puts
// back the usual "recovering" until the coordinator is up.
func (o *observability) standby(waiting bool) {
	if o == nil {
		return
	}
	if !waiting {
		o.health.Recovering()
		return
	}
	o.health.Standby()
}

// participantUp wires the running participant's gauges and readiness.
func (o *observability) participantUp(p *node.Participant, logger *slog.Logger) {
	if o == nil {
		return
	}
	metrics.WatchParticipant(o.reg, p, logger)
	o.health.SetReady(p.Health)
}
