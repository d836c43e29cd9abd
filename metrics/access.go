package metrics

import (
	"crypto/tls"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tpcd/tpcd/rpc"
)

// access guards the listener's paths: who may read them (the RPC port's
// callers) and how often (one token bucket).
type access struct {
	auth rpc.Auth
	// certificate is set when the RPC port requires a client certificate
	// (mutual TLS); the listener then asks for one without requiring it at
	// the handshake, so that /healthz stays open, and the guarded paths
	// require it.
	certificate bool
	bucket      *bucket
	// delay holds back every refusal, and every probe beyond the bucket,
	// before it is answered.
	delay   time.Duration
	refused *prometheus.CounterVec
	slowed  prometheus.Counter
	logger  *slog.Logger
}

// requireCaller answers 401 unless the request comes from a caller the RPC
// port accepts: one that may call tpcd.ping there (a token the port
// accepts, if it has tokens), with a verified client certificate under
// mutual TLS.
func (a *access) requireCaller(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.certificate && (r.TLS == nil || len(r.TLS.VerifiedChains) == 0) {
			a.refuse(w, r, "unauthorized", "no client certificate", http.StatusUnauthorized)
			return
		}
		if roles, _, reason := a.auth.Authenticate(r); roles == 0 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="tpcd"`)
			a.refuse(w, r, "unauthorized", reason, http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// limited answers 429 when the bucket is empty. It sits behind
// requireCaller, so that strangers refused there spend none of the
// bucket's tokens.
func (a *access) limited(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !a.bucket.take() {
			w.Header().Set("Retry-After", "1")
			a.refuse(w, r, "rate_limited", "", http.StatusTooManyRequests)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// paced answers a health probe when the bucket is empty too, but only
// after the delay: a probe must not fail because somebody else flooded
// the listener (an orchestrator would take the node out of service or
// restart it), while a flood of probes is slowed like any other.
func (a *access) paced(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !a.bucket.take() {
			a.slowed.Inc()
			if !a.wait(r) {
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// wait sleeps a.delay unless the caller leaves first (false).
func (a *access) wait(r *http.Request) bool {
	if a.delay <= 0 {
		return true
	}
	t := time.NewTimer(a.delay)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}

// refuse answers status after a.delay. A caller that floods waits for
// each answer on its connection (HTTP/1.1 answers in order), so the delay
// slows it to a few requests a second per connection; answering at once
// would let it spend as much of the node's CPU on refusals as it likes.
func (a *access) refuse(w http.ResponseWriter, r *http.Request, class, reason string, status int) {
	a.refused.WithLabelValues(class).Inc()
	if status == http.StatusUnauthorized {
		// As the RPC port does: who and why, never the token.
		a.logger.Warn("metrics listener: request refused: not authenticated", "remote", r.RemoteAddr, "path", r.URL.Path, "reason", reason)
	}
	if a.wait(r) {
		http.Error(w, http.StatusText(status), status)
	}
}

// listenerTLS is the RPC port's server TLS as the listener uses it: a
// client certificate is verified when presented but not required at the
// handshake (requireCaller requires it per path).
func listenerTLS(rpcTLS *tls.Config) (cfg *tls.Config, certificate bool) {
	if rpcTLS == nil {
		return nil, false
	}
	cfg = rpcTLS.Clone()
	if cfg.ClientAuth == tls.RequireAndVerifyClientCert {
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
		certificate = true
	}
	return cfg, certificate
}
