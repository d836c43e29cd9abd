package db

import (
	"errors"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// ConnectCause picks, from a failed connection attempt, the one cause a
// person should read, as a single line; ok is false when err is not a
// failed connection attempt.
//
// pgx tries every address of a URI and, with sslmode=prefer (the
// default), each of them twice, first with TLS, and lists every attempt.
// A missing database then reads after "tls error: server refused TLS
// connection", which only records that the server does no TLS before pgx
// tried without, and a refused connection is told twice. What the server
// itself answered (FATAL: database "x" does not exist) wins; else the last
// attempt that was not turned away for TLS alone.
func ConnectCause(err error) (cause error, ok bool) {
	var ce *pgconn.ConnectError
	if !errors.As(err, &ce) {
		return err, false
	}
	inner := errors.Unwrap(ce)
	if inner == nil {
		return err, false
	}
	attempts := []error{inner}
	if joined, ok := inner.(interface{ Unwrap() []error }); ok {
		attempts = joined.Unwrap()
	}
	for _, a := range attempts {
		var pe *pgconn.PgError
		if errors.As(a, &pe) {
			return &connectCause{msg: pe.Error(), err: err}, true
		}
	}
	pick := attempts[len(attempts)-1]
	for _, a := range attempts {
		if !strings.Contains(a.Error(), "tls error") {
			pick = a
		}
	}
	// Drop pgx's "HOST:PORT (HOST):" in front: the URI says where.
	if u := errors.Unwrap(pick); u != nil {
		pick = u
	}
	return &connectCause{msg: oneLine(pick.Error()), err: err}, true
}

// connectCause reads as the chosen cause and unwraps to the whole error,
// so that errors.As still finds a *pgconn.PgError or a net error in it.
type connectCause struct {
	msg string
	err error
}

func (c *connectCause) Error() string { return c.msg }
func (c *connectCause) Unwrap() error { return c.err }

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
