package rpc

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"net"
	"net/http"
	"strings"
)

// PeerMethodPrefix starts the names of node-to-node methods. Auth.PeerToken
// guards them; every other method is a client method guarded by
// Auth.ClientToken.
const PeerMethodPrefix = "tpcd."

// PingMethod is the health check every node serves. Either token may call
// it: it reveals only the node's role and epoch, and both operators' probes
// and peers use it.
const PingMethod = "tpcd.ping"

// Auth says which bearer tokens a Server requires. Tokens travel in the
// "Authorization: Bearer <token>" header and are compared in constant time.
//
// The rules, in full:
//   - client methods need ClientToken; with ClientToken empty they are open;
//   - peer methods (PeerMethodPrefix) need PeerToken; with PeerToken empty
//     they are open only while the client methods are open too, or when
//     PeersWithoutToken says so. Peer methods run SQL and decide
//     transactions, so they are never more open than the client methods: a
//     server whose only token is a client token serves them to nobody;
//   - PingMethod, the health check, answers any caller that may call
//     anything.
//
// The zero value requires no token at all, for a node only its own machine
// reaches (the caller decides when that is so).
type Auth struct {
	// ClientToken is required for client methods (those not starting with
	// PeerMethodPrefix).
	ClientToken string
	// PeerToken is required for node-to-node methods (PeerMethodPrefix).
	PeerToken string
	// PeersWithoutToken opens the peer methods to callers without a token
	// when PeerToken is empty although ClientToken is set: for a node whose
	// callers prove themselves with a certificate (mutual TLS), or one an
	// operator chose to run insecurely.
	PeersWithoutToken bool
}

// Enabled reports whether any token is required.
func (a Auth) Enabled() bool { return a.ClientToken != "" || a.PeerToken != "" }

// peersOpen reports whether peer methods need no token.
func (a Auth) peersOpen() bool {
	return a.PeerToken == "" && (a.ClientToken == "" || a.PeersWithoutToken)
}

// Role is what a caller's token allows.
type Role uint8

const (
	// RoleClient may call client methods.
	RoleClient Role = 1 << iota
	// RolePeer may call node-to-node methods.
	RolePeer
)

// Caller describes who sent a request; handlers find it with CallerOf.
type Caller struct {
	// Addr is the remote "ip:port" of the connection.
	Addr string
	// Roles are what the presented token (or its absence) allows.
	Roles Role
	// Authenticated is set when the caller presented a token the server
	// requires.
	Authenticated bool
}

// Host is the remote IP without the port, the identity per-client limits
// count by.
func (c Caller) Host() string {
	host, _, err := net.SplitHostPort(c.Addr)
	if err != nil {
		return c.Addr
	}
	return host
}

type callerKey struct{}

// CallerOf returns the caller of the request a handler serves; ok is false
// outside a Server's handler.
func CallerOf(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}

// WithCaller returns ctx carrying c, for tests of handlers.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// Authenticate works out what the token of r (or its absence) allows:
// roles is empty when it allows nothing, and reason then says why, for the
// log (it never contains the token). authenticated is set when r presented
// a token the server requires. Servers other than Server (the metrics
// listener) use it to accept the same callers.
func (a Auth) Authenticate(r *http.Request) (roles Role, authenticated bool, reason string) {
	return a.authenticate(r)
}

func (a Auth) authenticate(r *http.Request) (roles Role, authenticated bool, reason string) {
	token, present := bearer(r.Header.Get("Authorization"))
	if a.ClientToken == "" {
		roles |= RoleClient
	} else if present && tokenEqual(token, a.ClientToken) {
		roles |= RoleClient
		authenticated = true
	}
	if a.peersOpen() {
		roles |= RolePeer
	} else if a.PeerToken != "" && present && tokenEqual(token, a.PeerToken) {
		roles |= RolePeer
		authenticated = true
	}
	switch {
	case roles != 0:
		return roles, authenticated, ""
	case r.Header.Get("Authorization") == "":
		return 0, false, "no Authorization header"
	case !present:
		return 0, false, "Authorization header is not of the form \"Bearer <token>\""
	}
	return 0, false, "wrong token"
}

// allows reports whether roles may call method.
func allows(roles Role, method string) bool {
	switch {
	case method == PingMethod:
		return roles != 0
	case strings.HasPrefix(method, PeerMethodPrefix):
		return roles&RolePeer != 0
	}
	return roles&RoleClient != 0
}

func bearer(h string) (string, bool) {
	scheme, token, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// tokenEqual compares in constant time. Hashing first makes the time
// independent of the lengths too, which ConstantTimeCompare alone leaks.
func tokenEqual(got, want string) bool {
	g, w := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(g[:], w[:]) == 1
}
