package client

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/client/endpoint"
	"github.com/tpcd/tpcd/rpc"
)

// WrongAddrError says that --coordinator names something other than a
// tpcd coordinator, what it is, and what to give instead. Nothing will work
// until the address is changed, so it is a connection failure (exit
// status 2) and the interactive shell ends on it.
type WrongAddrError struct {
	Addr  string
	Found endpoint.Finding
	// Node and Coordinator are what a participant said of itself.
	Node, Coordinator string
	// Cause is the failure that made the client look.
	Cause error
}

const giveCoordinator = "give --coordinator the coordinator's RPC address (its --host)"

func (e *WrongAddrError) Error() string {
	switch e.Found.Kind {
	case endpoint.TPCD:
		if e.Found.Role == "participant" {
			if e.Coordinator != "" {
				return fmt.Sprintf("%s is %s of a tpcd cluster, not its coordinator: use --coordinator %s", e.Addr, e.Node, e.Coordinator)
			}
			return fmt.Sprintf("%s is a tpcd participant, not the coordinator: %s", e.Addr, giveCoordinator)
		}
		// A tpcd node in plain text reached by a client told to use TLS.
		return fmt.Sprintf("%s serves plain HTTP, not TLS: leave out --tls-ca, --tls-cert and --tls-key", e.Addr)
	case endpoint.TLS:
		return fmt.Sprintf("%s serves TLS: give --tls-ca FILE (the CA of its certificate; add --tls-cert and --tls-key if it requires client certificates)", e.Addr)
	case endpoint.Metrics:
		return fmt.Sprintf("%s is a tpcd node's metrics listener (its --metrics-addr: /metrics, /healthz, the status page), not its RPC address: %s", e.Addr, giveCoordinator)
	case endpoint.PostgreSQL:
		return fmt.Sprintf("%s is a PostgreSQL server, not a tpcd coordinator (psql connects there): %s", e.Addr, giveCoordinator)
	case endpoint.JSONRPC:
		return fmt.Sprintf("%s answers JSON-RPC but is not a tpcd node (it does not know %s): %s", e.Addr, api.MethodPing, giveCoordinator)
	case endpoint.HTTP:
		what := "an HTTP server"
		if e.Found.Server != "" {
			what = fmt.Sprintf("an HTTP server (%s)", e.Found.Server)
		}
		return fmt.Sprintf("%s is %s without tpcd's JSON-RPC endpoint %s: %s", e.Addr, what, rpc.DefaultPath, giveCoordinator)
	}
	return fmt.Sprintf("%s does not answer as a tpcd coordinator: %s", e.Addr, giveCoordinator)
}

// ExitCode makes the process exit with ExitConnection (kong.ExitCoder).
func (e *WrongAddrError) ExitCode() int { return ExitConnection }

// Unwrap returns the failure that made the client look.
func (e *WrongAddrError) Unwrap() error { return e.Cause }

// notCoordinator checks what a successful ping said: a participant answers
// ping too, but none of the client methods.
func (s *Session) notCoordinator(ping api.PingReply) error {
	if ping.Role != "participant" {
		return nil
	}
	return &WrongAddrError{Addr: s.Addr(), Found: endpoint.Finding{Kind: endpoint.TPCD, Role: ping.Role},
		Node: ping.Node, Coordinator: ping.Coordinator,
		Cause: fmt.Errorf("%s answers as a %s", s.Addr(), ping.Role)}
}

// identify looks at what listens at the coordinator's address after a ping
// that got an answer no coordinator gives: bytes that are not HTTP/2, a
// connection closed at once, a JSON-RPC error. It returns err itself when
// the address could not be reached at all, or when a tpcd coordinator
// does listen there (the failure was something else).
func (s *Session) identify(ctx context.Context, err error) error {
	if ctx.Err() != nil || !(rpc.IsTransport(err) || rpc.IsCode(err, rpc.CodeMethodNotFound)) || dialFailed(err) {
		return err
	}
	found := endpoint.Identify(ctx, s.Addr())
	tls := s.opts.TLS != nil
	switch {
	case found.Kind == endpoint.Unknown && !rpc.IsCode(err, rpc.CodeMethodNotFound):
		return err
	case found.Kind == endpoint.TPCD && !tls:
		return err // a tpcd node: the failure was something else
	case found.Kind == endpoint.TPCD:
		// A node in plain text, this client in TLS: say so, whatever
		// kind of node it is.
		found.Role = ""
	case found.Kind == endpoint.TLS && tls:
		return err // the TLS settings themselves are the trouble
	}
	return &WrongAddrError{Addr: s.Addr(), Found: found, Cause: err}
}

// dialFailed reports whether no connection could be made at all (refused,
// unreachable, timed out): then nothing listens to be identified.
func dialFailed(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}
