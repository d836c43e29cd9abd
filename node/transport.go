package node

import (
	"crypto/tls"
	"log/slog"

	"github.com/tpcd/tpcd/rpc"
)

// Transport secures a node's RPC: the tokens its server requires, the
// token it presents to its peers, and TLS on both sides. The zero value is
// plain h2c without tokens.
type Transport struct {
	// Auth lists the tokens this node's server requires (see rpc.Auth:
	// ClientToken for client methods, PeerToken for tpcd.* methods).
	Auth rpc.Auth
	// PeerToken is what this node sends when it calls its peers; it must
	// match their Auth.PeerToken.
	PeerToken string
	// ServerTLS makes the node serve TLS; ClientTLS makes it call its peers
	// over TLS (with its own certificate as client certificate for mutual
	// TLS). Build both with rpc.TLSFiles.
	ServerTLS, ClientTLS *tls.Config
}

func (t Transport) server(opts rpc.ServerOptions) rpc.ServerOptions {
	opts.Auth = t.Auth
	opts.TLS = t.ServerTLS
	return opts
}

func (t Transport) client(logger *slog.Logger) rpc.ClientOptions {
	// Batches travel over a stream (one frame each way per batch), and so
	// do pings, on a stream of their own: a stream is checked before it is
	// reused, so a peer that restarted does not fail the first ping, as a
	// kept-alive HTTP/1.1 connection can. A node has one batch in flight
	// per peer (see outbox), the case where streams cost least. HTTP1 is
	// for a peer that serves no streams.
	return rpc.ClientOptions{Logger: logger, Token: t.PeerToken, TLS: t.ClientTLS, HTTP1: true, Stream: true}
}
