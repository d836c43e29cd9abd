package metrics

import (
	"context"
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
)

// readyTimeout bounds a readiness check (database pings).
const readyTimeout = 2 * time.Second

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
	check atomic.Pointer[func(context.Context) error]
}

// SetReady installs the readiness check, once the node has recovered; it
// should ping the node's databases.
func (h *Health) SetReady(check func(context.Context) error) { h.check.Store(&check) }

// Ready runs the check: nil when ready.
func (h *Health) Ready(ctx context.Context) error {
	check := h.check.Load()
	if check == nil {
		return errors.New("recovering: the node has not finished replaying its log")
	}
	return (*check)(ctx)
}

// ServerOptions configure the metrics listener.
type ServerOptions struct {
	Registry *prometheus.Registry
	Health   *Health
	// Page, if set, is served at / (the coordinator's status page).
	Page   http.Handler
	Logger *slog.Logger
}

// Handler serves /metrics, /healthz, /readyz and Page at /.
func Handler(opts ServerOptions) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(opts.Registry, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(opts.Logger.Handler(), slog.LevelWarn),
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
		defer cancel()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := opts.Health.Ready(ctx); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %v\n", err)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	if opts.Page != nil {
		mux.Handle("GET /{$}", opts.Page)
	}
	return mux
}

// Server is the HTTP listener for metrics, health and the status page.
type Server struct {
	http *http.Server
	done chan struct{}
}

// Serve starts serving Handler(opts) on ln in the background.
func Serve(ln net.Listener, opts ServerOptions) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		http: &http.Server{
			Handler:           Handler(opts),
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       2 * time.Minute,
			MaxHeaderBytes:    64 << 10,
			ErrorLog:          slog.NewLogLogger(opts.Logger.Handler(), slog.LevelWarn),
		},
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
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
