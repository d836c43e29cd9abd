// Package rpc is the JSON-RPC 2.0 transport between tpcd nodes and towards
// operators and clients.
//
// Requests travel as HTTP POST bodies to one endpoint (default "/rpc"). The
// server speaks HTTP/1.1, so that curl works, and unencrypted HTTP/2 with
// prior knowledge (h2c), so that a node multiplexes any number of concurrent
// calls to a peer over a single TCP connection instead of dialling once per
// message. The Client speaks h2c, keeping one connection per peer, or
// HTTP/1.1, keeping one per call in flight; connections are dialled lazily
// and re-dialled after they break.
//
// Between nodes, batches travel over batch streams (stream.go): an HTTP/1.1
// connection upgraded to carry request bodies and their replies as
// checksummed frames, one in each direction per batch, which spares the
// per-request HTTP work for the many small messages of a transaction.
//
// The server uses github.com/creachadair/jrpc2 to parse and validate
// requests (single and batch) and dispatches each HTTP request to its handler
// itself, on that request's goroutine. jrpc2's HTTP bridge was tried first:
// it funnels every request through one in-memory channel, so handlers that
// wait (a commit waiting for votes) held up the very votes that would end
// the wait, and 64 concurrent clients stalled until timeouts. The client side is a thin layer over net/http rather
// than jrpc2's HTTP channel, because that channel stops the whole jrpc2
// client when any single HTTP exchange fails and reports the failure as a
// server-style internal error; tpcd needs per-call failures, cancellation
// that reaches the wire, and a clear split between "the server answered with
// an error" (*Error) and "no answer arrived" (IsTransport).
//
// Security (auth.go, tls.go): a Server may require bearer tokens, one for
// client methods and one for node-to-node methods (PeerMethodPrefix),
// compared in constant time before the body is read; it may serve TLS
// (HTTP/2 by ALPN) and require client certificates (mutual TLS). The Client
// sends its Token and speaks HTTP/2 over TLS when given a TLS config.
// Handlers learn who called through CallerOf.
//
// The wire format is described in docs/WIRE.md, security in
// docs/SECURITY.md.
package rpc
