package rpc

import (
	"context"
	"errors"
	"net"
	"sync"
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
	// clients is replaced, never changed in place, when Prefer adds one.
	clients atomic.Pointer[[]*Client]
	current atomic.Int64
	opts    ClientOptions

	mu    sync.Mutex // serializes Prefer's additions
	added int
}

// maxPreferred bounds the addresses Prefer adds to those given.
const maxPreferred = 8

// NewFailover returns a Failover over addrs ("host:port" each, at least
// one), each called as NewClient(addr, opts) would. It does not connect yet.
func NewFailover(addrs []string, opts ClientOptions) *Failover {
	if len(addrs) == 0 {
		panic("rpc: NewFailover needs at least one address")
	}
	f := &Failover{opts: opts}
	clients := make([]*Client, len(addrs))
	for i, a := range addrs {
		clients[i] = NewClient(a, opts)
	}
	f.clients.Store(&clients)
	return f
}

// Addr returns the address calls go to now.
func (f *Failover) Addr() string {
	// The list only grows, and current may already index a longer one.
	clients := *f.clients.Load()
	return clients[f.current.Load()%int64(len(clients))].addr
}

// Prefer makes addr the address calls go to next: the server that holds
// what the caller needs, where several serve at once. An address f was not
// given joins its list (a few at most; beyond that, one not given is
// ignored), after the others, so that when it stops answering calls move
// on to them.
func (f *Failover) Prefer(addr string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	clients := *f.clients.Load()
	for i, c := range clients {
		if c.addr == addr {
			f.current.Store(int64(i))
			return
		}
	}
	if f.added >= maxPreferred {
		return
	}
	f.added++
	grown := append(clients[:len(clients):len(clients)], NewClient(addr, f.opts))
	f.clients.Store(&grown)
	f.current.Store(int64(len(grown) - 1))
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
	clients := *f.clients.Load()
	start := f.current.Load()
	n := int64(len(clients))
	var err error
	for k := range n {
		i := (start + k) % n
		err = call(clients[i])
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
	for _, c := range *f.clients.Load() {
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
