package rpc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// A Client with ClientOptions.HTTP1 posts on kept-alive connections of its
// own rather than through http.Transport: the request is written and the
// response read (by net/http's http.ReadResponse) on the caller's
// goroutine. The transport hands every request to a writing and a reading
// goroutine of the connection and back; on a busy machine those hand-offs
// cost a tenth to a fifth of a transaction's Go CPU at one client
// (docs/PERFORMANCE.md, session 8). The idle connections live in a
// streamPool, so they expire, are checked with peerClosed before reuse (a
// connection the server closed while idle is not written to) and close
// with the client as streams do.
//
// Requests over maxOwnPost still go through http.Transport: this path
// writes the whole request before it reads, and a server that refuses a
// request early (413 past its size limit, 401 without reading the body)
// closes the connection once a few hundred KiB are left unread, so the
// refusal would be lost in a reset. Up to maxOwnPost the server always
// reads the whole body first (net/http drains up to 256 KiB of an unread
// one to keep the connection). A path or token that could not go into a
// request line or header as is also leaves the client on the transport.
const maxOwnPost = 64 << 10

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
	fresh := how != routeReuse
	if fresh {
		if sc, err = c.dialHTTP1(ctx); err != nil {
			return answer{}, err
		}
	}
	ans, reusable, err := c.tripHTTP1(ctx, sc, body, fresh)
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
	secured, err := c.h1.secure(ctx, conn)
	if err != nil {
		conn.Close()
		return nil, ctxOr(ctx, c.explain(err))
	}
	return &streamConn{conn: secured, br: bufio.NewReader(secured)}, nil
}

// tripHTTP1 writes one request on sc and reads its response; reusable says
// whether sc may carry the next one. Only a fresh connection's failure gets
// Client.explain's hints: one that already carried a response spoke plain
// HTTP, and its end means the server closed or crashed.
func (c *Client) tripHTTP1(ctx context.Context, sc *streamConn, body []byte, fresh bool) (ans answer, reusable bool, err error) {
	stop := bindCtx(ctx, sc.conn)
	ans, keep, err := c.exchangeHTTP1(sc, body)
	ended := !stop()
	if err != nil {
		if cerr := ctxEnded(ctx, err); cerr != nil {
			return answer{}, false, cerr
		}
		if fresh {
			err = c.explain(err)
		}
		return answer{}, false, err
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
	// An informational response (100 Continue, 103 Early Hints; a proxy
	// may send them) comes before the real one.
	for err == nil && resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
		resp, err = http.ReadResponse(sc.br, nil)
	}
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

// headHTTP1 is the part of every request before its Content-Length value;
// ok is false when host, path or token hold what a request line or header
// cannot carry as is (the transport then escapes or refuses it).
func headHTTP1(host, path, token string) (head string, ok bool) {
	if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " \t\r\n%?#") ||
		strings.ContainsAny(host, " \t\r\n/") || strings.ContainsAny(token, "\r\n") {
		return "", false
	}
	head = "POST " + path + " HTTP/1.1\r\nHost: " + host +
		"\r\nContent-Type: application/json\r\nAccept: application/json\r\n"
	if token != "" {
		head += "Authorization: Bearer " + token + "\r\n"
	}
	return head + "Content-Length: ", true
}
