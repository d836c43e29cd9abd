package rpc

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"
)

// A Client with ClientOptions.HTTP1 posts on kept-alive connections of its
// own rather than through http.Transport: the request is written and the
// response read (by net/http's http.ReadResponse) on the caller's
// goroutine. The transport hands every request to a writing and a reading
// goroutine of the connection and back; on a busy machine those hand-offs
// cost a fifth of a transaction's Go CPU at one client
// (docs/PERFORMANCE.md, session 8). The idle connections live in a
// streamPool, so they expire, are checked with peerClosed before reuse (a
// connection the server closed while idle is not written to) and close
// with the client as streams do.

// postHTTP1 sends body as one HTTP/1.1 POST and reads the whole response.
// An error means no answer arrived.
func (c *Client) postHTTP1(ctx context.Context, body []byte) (answer, error) {
	if err := ctx.Err(); err != nil {
		return answer{}, err
	}
	sc, how, err := c.h1.take()
	if err != nil {
		return answer{}, err
	}
	if how != routeReuse {
		if sc, err = c.dialHTTP1(ctx); err != nil {
			return answer{}, err
		}
	}
	ans, reusable, err := c.tripHTTP1(ctx, sc, body)
	if reusable {
		c.h1.put(sc)
	} else {
		sc.conn.Close()
	}
	return ans, err
}

func (c *Client) dialHTTP1(ctx context.Context) (*streamConn, error) {
	conn, err := c.logDial(c.h1.dialer)(ctx, "tcp", c.addr)
	if err != nil {
		return nil, err
	}
	if c.h1.tls != nil {
		tc := tls.Client(conn, c.h1.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, ctxOr(ctx, c.explain(fmt.Errorf("TLS handshake: %w", err)))
		}
		conn = tc
	}
	return &streamConn{conn: conn, br: bufio.NewReader(conn)}, nil
}

// tripHTTP1 writes one request on sc and reads its response; reusable says
// whether sc may carry the next one.
func (c *Client) tripHTTP1(ctx context.Context, sc *streamConn, body []byte) (ans answer, reusable bool, err error) {
	stop := bindCtx(ctx, sc.conn)
	ans, keep, err := c.exchangeHTTP1(sc, body)
	ended := !stop()
	if err != nil {
		if cerr := ctxEnded(ctx, err); cerr != nil {
			return answer{}, false, cerr
		}
		return answer{}, false, c.explain(err)
	}
	if ended {
		// A ctx that ended just as the response came may have left a past
		// deadline behind: the response stands, the connection goes.
		return ans, false, nil
	}
	sc.conn.SetDeadline(time.Time{})
	return ans, keep, nil
}

// ctxEnded returns ctx's error when ctx caused err: cancelled, or its
// deadline (which bindCtx gave the connection) passed, the connection's
// timeout possibly firing a moment before the context's own.
func ctxEnded(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	if d, ok := ctx.Deadline(); ok && errors.Is(err, os.ErrDeadlineExceeded) && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return nil
}

func (c *Client) exchangeHTTP1(sc *streamConn, body []byte) (answer, bool, error) {
	if _, err := sc.conn.Write(c.requestHTTP1(body)); err != nil {
		return answer{}, false, fmt.Errorf("write request: %w", err)
	}
	resp, err := http.ReadResponse(sc.br, nil)
	if err != nil {
		return answer{}, false, fmt.Errorf("read response: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, c.maxBytes+1))
	if err != nil {
		return answer{}, false, fmt.Errorf("read response: %w", err)
	}
	if int64(len(data)) > c.maxBytes {
		// The rest of the body is unread: the connection goes.
		return answer{}, false, fmt.Errorf("response exceeds %d bytes", c.maxBytes)
	}
	return answer{status: resp.StatusCode, statusText: resp.Status, data: data}, !resp.Close, nil
}

// requestHTTP1 is body as a complete HTTP/1.1 POST, headers and all, for
// one write.
func (c *Client) requestHTTP1(body []byte) []byte {
	b := make([]byte, 0, len(body)+len(c.h1Head)+24)
	b = append(b, c.h1Head...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\n\r\n"...)
	return append(b, body...)
}

// headHTTP1 is the part of every request before its Content-Length value.
func headHTTP1(host, path, token string) string {
	head := "POST " + path + " HTTP/1.1\r\nHost: " + host +
		"\r\nContent-Type: application/json\r\nAccept: application/json\r\n"
	if token != "" {
		head += "Authorization: Bearer " + token + "\r\n"
	}
	return head + "Content-Length: "
}
