package rpc

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
)

// Failover calls a service that several servers offer one at a time, such
// as a coordinator and its standbys (tpcd coordinator --lease), of which
// only the one serving accepts connections. Calls go to the server that
// last answered; when it cannot be connected to, the call goes to the
// next address, around the list once. Only a failure to connect moves a
// call on: the request was then sent nowhere, so sending it elsewhere
// cannot run it twice. Any other failure is the caller's to judge, as with
// Client, but the next call starts at the next address: a server that
// takes connections and does not answer (paused, hung, cut off) may have
// been replaced, and if it was not, the others refuse at once. It is safe
// for concurrent use.
type Failover struct {
	clients []*Client
	current atomic.Int64
}

// NewFailover returns a Failover over addrs ("host:port" each, at least
// one), each called as NewClient(addr, opts) would. It does not connect yet.
func NewFailover(addrs []string, opts ClientOptions) *Failover {
	if len(addrs) == 0 {
		panic("rpc: NewFailover needs at least one address")
	}
	f := &Failover{}
	for _, a := range addrs {
		f.clients = append(f.clients, NewClient(a, opts))
	}
	return f
}

// Addr returns the address calls go to now.
func (f *Failover) Addr() string { return f.clients[f.current.Load()].addr }

// Prefer makes addr, if it is one of f's, the address calls go to next:
// the server that holds what the caller needs, where several serve at
// once. Another address is ignored.
func (f *Failover) Prefer(addr string) {
	for i, c := range f.clients {
		if c.addr == addr {
			f.current.Store(int64(i))
			return
		}
	}
}

// Call is Client.Call on the serving address.
func (f *Failover) Call(ctx context.Context, method string, params, result any) error {
	return f.each(func(c *Client) error { return c.Call(ctx, method, params, result) })
}

// CallBatch is Client.CallBatch on the serving address.
func (f *Failover) CallBatch(ctx context.Context, calls []BatchCall) error {
	return f.each(func(c *Client) error {
		for i := range calls {
			calls[i].Err = nil
		}
		return c.CallBatch(ctx, calls)
	})
}

// NotifyBatch is Client.NotifyBatch on the serving address.
func (f *Failover) NotifyBatch(ctx context.Context, calls []BatchCall) error {
	return f.each(func(c *Client) error { return c.NotifyBatch(ctx, calls) })
}

// each runs call on the current client and, while it could not connect,
// on the next ones, once around the list; the first client that connects
// becomes current.
func (f *Failover) each(call func(*Client) error) error {
	start := f.current.Load()
	n := int64(len(f.clients))
	var err error
	for k := range n {
		i := (start + k) % n
		err = call(f.clients[i])
		switch {
		case err == nil || !IsTransport(err):
			if i != start {
				f.current.CompareAndSwap(start, i)
			}
			return err
		case !NotConnected(err):
			f.current.CompareAndSwap(start, (i+1)%n)
			return err
		}
	}
	return err
}

// Close closes every client.
func (f *Failover) Close() error {
	var errs []error
	for _, c := range f.clients {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// NotConnected reports whether err is a call's failure to connect to its
// server at all (refused, unreachable, timed out while connecting): the
// request was not sent.
func NotConnected(err error) bool {
	var te *TransportError
	if !errors.As(err, &te) {
		return false
	}
	var op *net.OpError
	return errors.As(te.Err, &op) && op.Op == "dial"
}
