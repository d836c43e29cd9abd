package node

import (
	"crypto/tls"
	"log/slog"

	"github.com/tpcd/tpcd/rpc"
)

// Transport secures a node's RPC: the tokens its server requires, the
// token it presents to its peers, and TLS on both sides. The zero value is
// plain TCP without tokens, which lets anyone who reaches the node send it
// node-to-node messages: right only for a node that listens on loopback.
// cmd/tpcd refuses to start a node elsewhere without a peer token or mutual
// TLS, and localcluster gives its nodes a random peer token.
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

// client is how a node calls its peers: over batch streams only, which
// every tpcd node serves. A batch takes one frame each way, and so does the
// coordinator's health ping, on a stream of its own; a stream is checked
// before it is reused, so a peer that restarted does not fail the first
// ping. A node
// has one batch in flight per peer (see outbox), the case where streams
// cost least (docs/WIRE.md).
func (t Transport) client(logger *slog.Logger) rpc.ClientOptions {
	return rpc.ClientOptions{Logger: logger, Token: t.PeerToken, TLS: t.ClientTLS, Stream: true}
}
