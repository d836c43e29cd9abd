package metrics

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tpcd/tpcd/rpc"
)

const (
	// DefaultRate and DefaultBurst size the token bucket of the paths that
	// cost a node work (/metrics, the status page): ample for Prometheus
	// scraping every few seconds and a few operators watching the page
	// (which reloads every 2 s), far below what would take CPU from
	// commits.
	DefaultRate  = 10
	DefaultBurst = 40
	// DefaultRefusalDelay holds back every 401 and 429, and every probe
	// beyond the bucket: a flooding caller then sends a few requests a
	// second per connection.
	DefaultRefusalDelay = 200 * time.Millisecond
	// DefaultMaxConns bounds the listener's open connections.
	DefaultMaxConns = 64
)

// NewRegistry returns a registry with the Go runtime and process collectors,
// ready for NewCoordinator or NewParticipant.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Health answers /readyz. Until SetReady is called the node is still
// starting (recovering its log) and not ready.
type Health struct {
	health atomic.Pointer[func() error]
}

// SetReady installs the node's health, once the node has recovered. It is
// called on every /readyz, so it must read memory only (node.Coordinator's
// and node.Participant's Health do): a check that pinged the databases per
// request would let a flood of probes take the node's connections.
func (h *Health) SetReady(health func() error) { h.health.Store(&health) }

// Recovering makes Ready report the node recovering again, as before
// SetReady.
func (h *Health) Recovering() { h.health.Store(nil) }

// ErrStandby is the readiness of a coordinator that waits for the log's
// slot while another holds it (tpcd coordinator --lease).
var ErrStandby = errors.New("standby: another coordinator holds the log's slot; this one takes over when its lease expires")

// Standby makes Ready report ErrStandby until SetReady or Recovering.
// /readyz answers it 503 like any reason not to serve, except when asked
// /readyz?standby=ready: an orchestrator that must count every healthy
// replica ready before it rolls the next one or drains a machine asks
// that way, while the clients find the serving coordinator by its open
// port (a standby's is closed).
func (h *Health) Standby() { h.SetReady(func() error { return ErrStandby }) }

// Ready reports the node's health: nil when ready.
func (h *Health) Ready() error {
	health := h.health.Load()
	if health == nil {
		return errors.New("recovering: the node has not finished replaying its log")
	}
	return (*health)()
}

// ServerOptions configure the metrics listener.
type ServerOptions struct {
	Registry *prometheus.Registry
	Health   *Health
	// Page, if set, is served at / (the coordinator's status page).
	Page   http.Handler
	Logger *slog.Logger
	// Auth is the node's RPC tokens. /metrics, /readyz and the page answer
	// whoever may call tpcd.ping on the RPC port (a token it accepts, when
	// it has tokens); others get 401. /healthz answers anyone.
	Auth rpc.Auth
	// TLS, if set, is the RPC port's server TLS: the listener serves TLS
	// with it, and when it requires client certificates (mutual TLS), so do
	// all paths but /healthz.
	TLS *tls.Config
	// Rate and Burst size the listener's token bucket: requests for
	// /metrics and the page beyond it get 429, probes beyond it are
	// answered after RefusalDelay. Defaults DefaultRate and DefaultBurst.
	Rate  float64
	Burst int
	// RefusalDelay is how long a refused request (401, 429), or a probe
	// beyond the bucket, waits for its answer; default
	// DefaultRefusalDelay, negative for none.
	RefusalDelay time.Duration
	// MaxConns bounds the connections open at once (Serve); more wait to
	// be accepted. Default DefaultMaxConns.
	MaxConns int
}

// Handler serves /metrics, /healthz, /readyz and Page at /.
//
// Every request takes a token from one bucket. Beyond it, /metrics and the
// page (which cost the node work: gathering, rendering) get 429, while
// /readyz and /healthz (answered from memory) are answered late: a probe
// refused because somebody else flooded the listener would make an
// orchestrator take the node out of service or restart it. Refusals are
// answered late too, so that a flood over a connection slows to a few
// requests a second.
func Handler(opts ServerOptions) http.Handler {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Rate <= 0 {
		opts.Rate = DefaultRate
	}
	if opts.Burst <= 0 {
		opts.Burst = DefaultBurst
	}
	if opts.RefusalDelay == 0 {
		opts.RefusalDelay = DefaultRefusalDelay
	}
	_, certificate := listenerTLS(opts.TLS)
	a := &access{
		auth: opts.Auth, certificate: certificate, logger: opts.Logger,
		bucket: newBucket(opts.Rate, opts.Burst, time.Now), delay: opts.RefusalDelay,
		refused: newCounterVec("tpcd_observer_requests_refused_total", "Requests to the metrics listener refused: unauthorized (no or wrong token or certificate), rate_limited (429).", "reason"),
	}
	a.slowed = newCounter("tpcd_observer_probes_slowed_total", "Health probes (/readyz, /healthz) answered late because the metrics listener's token bucket was empty.")
	opts.Registry.MustRegister(a.refused, a.slowed)
	for _, class := range []string{"unauthorized", "rate_limited"} {
		a.refused.WithLabelValues(class)
	}

	mux := http.NewServeMux()
	mux.Handle("GET /metrics", a.requireCaller(a.limited(promhttp.HandlerFor(opts.Registry, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(opts.Logger.Handler(), slog.LevelWarn),
	}))))
	mux.Handle("GET /healthz", a.paced(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})))
	mux.Handle("GET /readyz", a.requireCaller(a.paced(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		err := opts.Health.Ready()
		if errors.Is(err, ErrStandby) && r.URL.Query().Get("standby") == "ready" {
			fmt.Fprintf(w, "ready: %v\n", err)
			return
		}
		if err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %v\n", err)
			return
		}
		fmt.Fprintln(w, "ready")
	}))))
	if opts.Page != nil {
		mux.Handle("GET /{$}", a.requireCaller(a.limited(opts.Page)))
	}
	return mux
}

// Server is the HTTP listener for metrics, health and the status page.
type Server struct {
	http *http.Server
	done chan struct{}
}

// Serve starts serving Handler(opts) on ln in the background, over TLS
// when opts.TLS is set.
func Serve(ln net.Listener, opts ServerOptions) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	tlsConfig, _ := listenerTLS(opts.TLS)
	if opts.MaxConns <= 0 {
		opts.MaxConns = DefaultMaxConns
	}
	ln = limitListener(ln, opts.MaxConns)
	s := &Server{
		http: &http.Server{
			Handler:           Handler(opts),
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       2 * time.Minute,
			MaxHeaderBytes:    64 << 10,
			ErrorLog:          slog.NewLogLogger(opts.Logger.Handler(), slog.LevelWarn),
			TLSConfig:         tlsConfig,
		},
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		var err error
		if tlsConfig != nil {
			// The certificate is in tlsConfig; ServeTLS adds ALPN.
			err = s.http.ServeTLS(ln, "", "")
		} else {
			err = s.http.Serve(ln)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			opts.Logger.Error("metrics listener stopped", "err", err)
		}
	}()
	return s
}

// Close stops the listener, letting requests in progress finish briefly.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.http.Shutdown(ctx)
	<-s.done
	return err
}
