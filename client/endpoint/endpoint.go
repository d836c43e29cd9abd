// Package endpoint finds out what listens at an address that did not answer
// as a tpcd coordinator, so that the client can say so plainly ("that is a
// PostgreSQL server") instead of passing on whatever the HTTP/2 transport
// made of a stranger's bytes.
//
// It asks in the order that gets a quick, definite answer from each kind
// of server: first an HTTP/1.1 request (an HTTP server answers it, a TLS
// server answers it with a complaint, PostgreSQL hangs up at once as the
// bytes are no startup packet), then, if nobody answered, PostgreSQL's
// SSLRequest, which a PostgreSQL server answers with a single byte.
package endpoint

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/tpcd/tpcd/rpc"
)

// Kind is what listens at an address.
type Kind int

// The kinds Identify tells apart.
const (
	// Unknown: nothing answered, or nothing recognisable did.
	Unknown Kind = iota
	// TPCD: a tpcd node answered tpcd.ping over plain HTTP; Finding.Role
	// says which kind of node.
	TPCD
	// TLS: a server that speaks TLS (a tpcd node started with --tls-cert,
	// most likely).
	TLS
	// Metrics: a tpcd node's metrics listener (--metrics-addr).
	Metrics
	// HTTP: some other HTTP server.
	HTTP
	// JSONRPC: a JSON-RPC server that does not know tpcd.ping.
	JSONRPC
	// PostgreSQL: a PostgreSQL server (or anything speaking its protocol).
	PostgreSQL
)

// Finding is what Identify learnt.
type Finding struct {
	Kind Kind
	// Role is the tpcd.ping role ("coordinator", "participant") for TPCD.
	Role string
	// Server is the HTTP Server header for HTTP, if it sent one.
	Server string
}

// What a tpcd node's metrics listener serves (docs/OPERATIONS.md).
const (
	metricsPath = "/metrics"
	// metricPrefix starts the name of every metric a tpcd node exports.
	metricPrefix = "tpcd_"
)

// sslRequest is PostgreSQL's SSLRequest message: length 8, code 80877103.
var sslRequest = []byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}

// maxBody bounds what is read of an HTTP answer: enough for a metrics page
// to name a tpcd_ metric near its top.
const maxBody = 1 << 20

// defaultTimeout bounds the whole identification when ctx has no deadline.
const defaultTimeout = 10 * time.Second

// Identify asks the server at addr (HOST:PORT) what it is. It never fails:
// what it cannot tell is Unknown.
func Identify(ctx context.Context, addr string) Finding {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultTimeout)
		defer cancel()
	}
	if f, answered := askHTTP(ctx, addr); answered {
		return f
	}
	if isPostgreSQL(ctx, addr) {
		return Finding{Kind: PostgreSQL}
	}
	return Finding{Kind: Unknown}
}

// askHTTP posts tpcd.ping over HTTP/1.1 and, if the server answers but not
// as a tpcd node, asks for /metrics. answered is false when no HTTP answer
// came at all.
func askHTTP(ctx context.Context, addr string) (f Finding, answered bool) {
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	tr := &http.Transport{Protocols: protocols, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	body := fmt.Sprintf(`{"jsonrpc":"2.0","id":1,"method":%q}`, rpc.PingMethod)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+rpc.DefaultPath, strings.NewReader(body))
	if err != nil {
		return Finding{}, false
	}
	req.Header.Set("Content-Type", "application/json")
	status, header, data, err := do(hc, req)
	if err != nil {
		return Finding{}, false
	}
	var reply struct {
		JSONRPC string `json:"jsonrpc"`
		Result  *struct {
			Role string `json:"role"`
		} `json:"result"`
		Error *struct {
			Code int `json:"code"`
		} `json:"error"`
	}
	if json.Unmarshal(data, &reply) == nil && reply.JSONRPC == "2.0" {
		switch {
		case reply.Result != nil && reply.Result.Role != "":
			return Finding{Kind: TPCD, Role: reply.Result.Role}, true
		case reply.Error != nil && reply.Error.Code == rpc.CodeUnauthorized:
			// A tpcd node that wants a token answers ping to either
			// of its tokens only.
			return Finding{Kind: TPCD}, true
		}
		return Finding{Kind: JSONRPC}, true
	}
	// Go's TLS server answers a plain-text request with this 400.
	if status == http.StatusBadRequest && bytes.Contains(data, []byte("HTTPS server")) {
		return Finding{Kind: TLS}, true
	}
	f = Finding{Kind: HTTP, Server: header.Get("Server")}
	req, err = http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+metricsPath, nil)
	if err != nil {
		return f, true
	}
	if status, _, data, err := do(hc, req); err == nil && status == http.StatusOK && bytes.Contains(data, []byte(metricPrefix)) {
		return Finding{Kind: Metrics}, true
	}
	return f, true
}

// do sends req and reads at most maxBody bytes of the answer.
func do(hc *http.Client, req *http.Request) (status int, header http.Header, body []byte, err error) {
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return 0, nil, nil, err
	}
	return resp.StatusCode, resp.Header, body, nil
}

// isPostgreSQL sends an SSLRequest: a PostgreSQL server answers 'S' (it
// will do TLS) or 'N' (it will not), and a very old one an error message
// ('E'). The connection is closed right after, which the server takes
// silently.
func isPostgreSQL(ctx context.Context, addr string) bool {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	if _, err := conn.Write(sslRequest); err != nil {
		return false
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(conn, b); err != nil {
		return false
	}
	return b[0] == 'S' || b[0] == 'N' || b[0] == 'E'
}
