package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tpcd/tpcd/internal/testbin"
)

// batchDeadline only keeps a broken implementation from hanging the test
// run; no assertion depends on it.
const batchDeadline = 30 * time.Second

// startCountingServer is startServer with the endpoint mounted behind a
// wrapper that counts HTTP requests, to prove what reaches the wire: one
// request for a whole batch, none for a batch that fails locally.
func startCountingServer(t *testing.T, opts ServerOptions) (addr string, requests *atomic.Int64) {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	srv := NewServer(opts)
	counter := &countingHandler{h: srv.Handler()}
	mux := http.NewServeMux()
	mux.Handle(DefaultPath, counter)
	return serveMux(t, mux, srv), &counter.requests
}

// countingMethods are the test methods and, for each of answers, a method
// of that name that counts its runs in ran and returns its answer.
func countingMethods(ran *atomic.Int64, answers map[string]string) map[string]Handler {
	methods := newTestMethods().methods()
	for name, answer := range answers {
		methods[name] = func(context.Context, json.RawMessage) (any, error) {
			ran.Add(1)
			return answer, nil
		}
	}
	return methods
}

// wantBatchErr fails the test unless every call of a batch that failed as a
// whole carries the batch's error.
func wantBatchErr(t *testing.T, calls []BatchCall, err error) {
	t.Helper()
	for i, call := range calls {
		if call.Err != err {
			t.Fatalf("call %d: Err %v, want the batch's error %v", i, call.Err, err)
		}
	}
}

func TestCallBatchMixedOutcomes(t *testing.T) {
	addr, requests := startCountingServer(t, ServerOptions{Methods: newTestMethods().methods()})
	c := newTestClient(t, addr)

	var first, last echoParams
	var null any = "unchanged"
	var wrongType []string
	untouched := echoParams{Text: "untouched"}
	calls := []BatchCall{
		{Method: "echo", Params: echoParams{Text: "first", Count: 1}, Result: &first},
		{Method: "coded", Params: map[string]int{}, Result: &untouched},
		{Method: "no.such.method"},
		{Method: "echo", Params: echoParams{Text: "ignored"}},
		{Method: "nothing", Result: &null},
		{Method: "plainerr"},
		{Method: "echo"}, // no params: the handler refuses them
		{Method: "echo", Params: echoParams{Text: "x"}, Result: &wrongType},
		{Method: "panic"},
		{Method: "echo", Params: json.RawMessage(`{"text":"last","count":9}`), Result: &last},
	}
	ctx, cancel := context.WithTimeout(context.Background(), batchDeadline)
	defer cancel()
	if err := c.CallBatch(ctx, calls); err != nil {
		t.Fatalf("CallBatch: %v", err)
	}
	if n := requests.Load(); n != 1 {
		t.Fatalf("batch of %d took %d HTTP requests, want 1", len(calls), n)
	}

	// Server errors, each on its own call and each proving the call ran.
	wantCode := map[int]int{
		1: CodeTxNotActive,
		2: CodeMethodNotFound,
		5: CodeInternal,
		6: CodeInvalidParams,
		8: CodeInternal,
	}
	for i, call := range calls {
		code, isErr := wantCode[i]
		switch {
		case isErr:
			if !IsCode(call.Err, code) || IsTransport(call.Err) {
				t.Errorf("call %d (%s): Err %v, want code %d", i, call.Method, call.Err, code)
			} else if !strings.Contains(call.Err.Error(), call.Method) {
				t.Errorf("call %d: Err %q does not name method %s", i, call.Err, call.Method)
			}
		case i == 7:
			// The server answered; only the local decoding failed.
			var e *Error
			if call.Err == nil || IsTransport(call.Err) || errors.As(call.Err, &e) {
				t.Errorf("call %d (result of the wrong type): Err %v, want a local decode error", i, call.Err)
			}
		default:
			if call.Err != nil {
				t.Errorf("call %d (%s): unexpected Err %v", i, call.Method, call.Err)
			}
		}
	}
	var e *Error
	if errors.As(calls[1].Err, &e) && string(e.Data) != `{"tx":7}` {
		t.Errorf("coded data %s, want {\"tx\":7}", e.Data)
	}
	if !strings.Contains(fmt.Sprint(calls[5].Err), "disk on fire") {
		t.Errorf("plainerr: %v does not carry the handler's message", calls[5].Err)
	}
	if first != (echoParams{Text: "first", Count: 1}) || last != (echoParams{Text: "last", Count: 9}) {
		t.Errorf("results decoded as %+v and %+v", first, last)
	}
	if null != nil {
		t.Errorf("nothing decoded as %v, want nil", null)
	}
	if untouched.Text != "untouched" {
		t.Errorf("a failed call wrote its Result: %+v", untouched)
	}

	// One call is a batch too, and the client's ids keep matching after it.
	one := []BatchCall{{Method: "echo", Params: echoParams{Text: "solo"}, Result: &first}}
	if err := c.CallBatch(ctx, one); err != nil || one[0].Err != nil || first.Text != "solo" {
		t.Fatalf("batch of one: %v, %v, %+v", err, one[0].Err, first)
	}
	if err := c.Call(ctx, "echo", echoParams{Text: "plain"}, &first); err != nil || first.Text != "plain" {
		t.Fatalf("Call after batches: %v, %+v", err, first)
	}
}

func TestCallBatchConcurrentBatchesShareOneConnection(t *testing.T) {
	_, ln := startServer(t, "", ServerOptions{Methods: newTestMethods().methods()})
	c := newTestClient(t, ln.Addr().String())
	ctx, cancel := context.WithTimeout(context.Background(), batchDeadline)
	defer cancel()

	const batches, size = 8, 25
	var wg sync.WaitGroup
	errs := make([]error, batches)
	results := make([][]echoParams, batches)
	calls := make([][]BatchCall, batches)
	for b := range batches {
		results[b] = make([]echoParams, size)
		calls[b] = make([]BatchCall, size)
		for i := range size {
			calls[b][i] = BatchCall{Method: "echo", Params: echoParams{Text: fmt.Sprintf("b%d", b), Count: i}, Result: &results[b][i]}
		}
		wg.Go(func() { errs[b] = c.CallBatch(ctx, calls[b]) })
	}
	wg.Wait()
	for b := range batches {
		if errs[b] != nil {
			t.Fatalf("batch %d: %v", b, errs[b])
		}
		for i := range size {
			want := echoParams{Text: fmt.Sprintf("b%d", b), Count: i}
			if calls[b][i].Err != nil || results[b][i] != want {
				t.Fatalf("batch %d call %d: %+v, %v; want %+v", b, i, results[b][i], calls[b][i].Err, want)
			}
		}
	}
	if n := ln.accepted.Load(); n != 1 {
		t.Fatalf("server accepted %d connections, want 1", n)
	}
}

func TestInlineRunsInBatchOrder(t *testing.T) {
	const n = 50
	var (
		mu       sync.Mutex
		order    []int
		inFlight atomic.Int64
		overlaps atomic.Int64
	)
	record := func(ctx context.Context, raw json.RawMessage) (any, error) {
		var p struct {
			I int `json:"i"`
		}
		if err := DecodeParams(raw, &p); err != nil {
			return nil, err
		}
		if inFlight.Add(1) != 1 {
			overlaps.Add(1)
		}
		defer inFlight.Add(-1)
		mu.Lock()
		order = append(order, p.I)
		mu.Unlock()
		return p.I, nil
	}
	other := func(ctx context.Context, raw json.RawMessage) (any, error) {
		var p struct {
			I int `json:"i"`
		}
		if err := DecodeParams(raw, &p); err != nil {
			return nil, err
		}
		return p.I, nil
	}
	cases := []struct {
		name string
		// method of entry i
		method func(i int) string
	}{
		{"all inline", func(int) string { return "record" }},
		{"inline between concurrent entries", func(i int) string {
			if i%2 == 0 {
				return "record"
			}
			return "other"
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			order = nil
			mu.Unlock()
			overlaps.Store(0)
			addr, requests := startCountingServer(t, ServerOptions{
				Methods: map[string]Handler{"record": record, "other": other},
				Inline:  []string{"record"},
			})
			c := newTestClient(t, addr)
			ctx, cancel := context.WithTimeout(context.Background(), batchDeadline)
			defer cancel()

			results := make([]int, n)
			calls := make([]BatchCall, n)
			var want []int
			for i := range n {
				calls[i] = BatchCall{Method: tc.method(i), Params: map[string]int{"i": i}, Result: &results[i]}
				if calls[i].Method == "record" {
					want = append(want, i)
				}
			}
			if err := c.CallBatch(ctx, calls); err != nil {
				t.Fatalf("CallBatch: %v", err)
			}
			if r := requests.Load(); r != 1 {
				t.Fatalf("%d HTTP requests, want 1", r)
			}
			for i, call := range calls {
				if call.Err != nil || results[i] != i {
					t.Fatalf("call %d: result %d, Err %v", i, results[i], call.Err)
				}
			}
			mu.Lock()
			got := append([]int(nil), order...)
			mu.Unlock()
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("inline entries ran in order %v, want %v", got, want)
			}
			if o := overlaps.Load(); o != 0 {
				t.Fatalf("inline entries overlapped %d times, want one after another", o)
			}
		})
	}
}

// TestNonInlineEntriesRunConcurrently proves that a waiting entry does not
// hold up the rest of its batch: "wait" returns only once "signal", a later
// entry of the same batch, has run, so the batch could never complete if
// its entries ran one after another.
func TestNonInlineEntriesRunConcurrently(t *testing.T) {
	cases := []struct {
		name   string
		inline []string
		batch  []string
	}{
		{"both concurrent", nil, []string{"wait", "signal"}},
		{"signal inline", []string{"signal"}, []string{"wait", "signal"}},
		{"several waiters before the signal", []string{"echo"}, []string{"wait", "echo", "wait", "wait", "signal", "echo"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			signalled := make(chan struct{})
			var once sync.Once
			methods := newTestMethods().methods()
			methods["wait"] = func(ctx context.Context, _ json.RawMessage) (any, error) {
				select {
				case <-signalled:
					return "woken", nil
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			methods["signal"] = func(context.Context, json.RawMessage) (any, error) {
				once.Do(func() { close(signalled) })
				return "signalled", nil
			}
			addr, requests := startCountingServer(t, ServerOptions{Methods: methods, Inline: tc.inline})
			c := newTestClient(t, addr)
			ctx, cancel := context.WithTimeout(context.Background(), batchDeadline)
			defer cancel()

			calls := make([]BatchCall, len(tc.batch))
			results := make([]any, len(tc.batch))
			for i, m := range tc.batch {
				calls[i] = BatchCall{Method: m, Result: &results[i]}
				if m == "echo" {
					calls[i].Params = echoParams{Text: "e"}
				}
			}
			if err := c.CallBatch(ctx, calls); err != nil {
				t.Fatalf("CallBatch: %v (entries ran one after another?)", err)
			}
			if r := requests.Load(); r != 1 {
				t.Fatalf("%d HTTP requests, want 1", r)
			}
			for i, call := range calls {
				if call.Err != nil {
					t.Fatalf("call %d (%s): %v", i, call.Method, call.Err)
				}
				if call.Method == "wait" && results[i] != "woken" {
					t.Fatalf("call %d: result %v, want woken", i, results[i])
				}
			}
		})
	}
}

func TestCallBatchServerDown(t *testing.T) {
	c := newTestClient(t, testbin.RefusingAddr(t))
	var res echoParams
	calls := []BatchCall{
		{Method: "echo", Params: echoParams{Text: "a"}, Result: &res},
		{Method: "nothing"},
	}
	err := c.CallBatch(context.Background(), calls)
	if !IsTransport(err) {
		t.Fatalf("nothing listening: got %v, want a transport error", err)
	}
	wantBatchErr(t, calls, err)
	if res != (echoParams{}) {
		t.Fatalf("result written without an answer: %+v", res)
	}
}

// TestCallBatchRefusedAsAWhole covers requests the server refuses before
// running any handler: each call carries the server's error, which is no
// transport error since the server did answer.
func TestCallBatchRefusedAsAWhole(t *testing.T) {
	var ran atomic.Int64
	methods := countingMethods(&ran, map[string]string{"count": "counted", "tpcd.vote": "voted"})
	const clientTok, peerTok = "client-secret", "peer-secret"
	_, authed := startServer(t, "", ServerOptions{Methods: methods, Auth: Auth{ClientToken: clientTok, PeerToken: peerTok}})
	_, small := startServer(t, "", ServerOptions{Methods: methods, MaxRequestBytes: 512})

	big := strings.Repeat("x", 600)
	cases := []struct {
		name string
		addr string
		opts ClientOptions
		code int
	}{
		{"wrong token", authed.Addr().String(), ClientOptions{Token: "wrong"}, CodeUnauthorized},
		{"no token", authed.Addr().String(), ClientOptions{}, CodeUnauthorized},
		{"body too large", small.Addr().String(), ClientOptions{}, CodeInvalidRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ran.Store(0)
			c := newClientWith(t, tc.addr, tc.opts)
			var res any = "unchanged"
			calls := []BatchCall{
				{Method: "count", Result: &res},
				{Method: "echo", Params: echoParams{Text: big}},
				{Method: "count"},
			}
			err := c.CallBatch(context.Background(), calls)
			if !IsCode(err, tc.code) || IsTransport(err) {
				t.Fatalf("CallBatch: %v, want code %d and no transport error", err, tc.code)
			}
			wantBatchErr(t, calls, err)
			if n := ran.Load(); n != 0 {
				t.Fatalf("%d handlers ran for a refused request", n)
			}
			if res != "unchanged" {
				t.Fatalf("result written for a refused request: %v", res)
			}
		})
	}

	// A token valid for some entries only: the batch is answered, and each
	// entry the token does not allow is refused on its own.
	t.Run("token for some entries", func(t *testing.T) {
		ran.Store(0)
		c := newClientWith(t, authed.Addr().String(), ClientOptions{Token: clientTok})
		var res any
		calls := []BatchCall{
			{Method: "count", Result: &res},
			{Method: "tpcd.vote"},
			{Method: PingMethod},
		}
		if err := c.CallBatch(context.Background(), calls); err != nil {
			t.Fatalf("CallBatch: %v", err)
		}
		if calls[0].Err != nil || res != "counted" {
			t.Fatalf("allowed entry: %v, %v", res, calls[0].Err)
		}
		if !IsCode(calls[1].Err, CodeUnauthorized) {
			t.Fatalf("peer method with a client token: %v, want code %d", calls[1].Err, CodeUnauthorized)
		}
		// Allowed to either token, but not served here.
		if !IsCode(calls[2].Err, CodeMethodNotFound) {
			t.Fatalf("ping: %v, want code %d", calls[2].Err, CodeMethodNotFound)
		}
		if n := ran.Load(); n != 1 {
			t.Fatalf("%d handlers ran, want 1", n)
		}
	})
}

func TestCallBatchWrongPath(t *testing.T) {
	_, ln := startServer(t, "", ServerOptions{Methods: newTestMethods().methods()})
	c := newClientWith(t, ln.Addr().String(), ClientOptions{Path: "/nowhere"})
	calls := []BatchCall{{Method: "echo", Params: echoParams{}}, {Method: "nothing"}}
	err := c.CallBatch(context.Background(), calls)
	if !IsTransport(err) || !strings.Contains(err.Error(), "404") {
		t.Fatalf("batch to a path that is no endpoint: %v, want a transport error naming HTTP 404", err)
	}
	wantBatchErr(t, calls, err)
}

func TestCallBatchContextEnds(t *testing.T) {
	m := newTestMethods()
	_, ln := startServer(t, "", ServerOptions{Methods: m.methods()})
	c := newTestClient(t, ln.Addr().String())
	defer close(m.release)

	check := func(t *testing.T, err error, want error, calls []BatchCall) {
		t.Helper()
		if !IsTransport(err) || !errors.Is(err, want) {
			t.Fatalf("CallBatch: %v, want %v as a transport error", err, want)
		}
		wantBatchErr(t, calls, err)
	}

	t.Run("cancelled while a handler runs", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var res echoParams
		calls := []BatchCall{
			{Method: "echo", Params: echoParams{Text: "a"}, Result: &res},
			{Method: "block"},
			{Method: "echo", Params: echoParams{Text: "b"}},
		}
		done := make(chan error, 1)
		go func() { done <- c.CallBatch(ctx, calls) }()
		<-m.started
		cancel()
		check(t, <-done, context.Canceled, calls)
		if res != (echoParams{}) {
			t.Fatalf("result written without an answer: %+v", res)
		}
	})
	t.Run("cancelled before the call", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		calls := []BatchCall{{Method: "echo", Params: echoParams{}}, {Method: "nothing"}}
		check(t, c.CallBatch(ctx, calls), context.Canceled, calls)
	})
	t.Run("deadline already past", func(t *testing.T) {
		ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
		defer cancel()
		calls := []BatchCall{{Method: "echo", Params: echoParams{}}, {Method: "nothing"}}
		check(t, c.CallBatch(ctx, calls), context.DeadlineExceeded, calls)
	})

	// The connection survives for later batches.
	var res echoParams
	calls := []BatchCall{{Method: "echo", Params: echoParams{Text: "after"}, Result: &res}, {Method: "nothing"}}
	if err := c.CallBatch(context.Background(), calls); err != nil || calls[0].Err != nil || calls[1].Err != nil || res.Text != "after" {
		t.Fatalf("batch after cancellations: %v, %v, %v, %+v", err, calls[0].Err, calls[1].Err, res)
	}
}

func TestCallBatchEmptyIsNoOp(t *testing.T) {
	addr, requests := startCountingServer(t, ServerOptions{Methods: newTestMethods().methods()})
	live := newTestClient(t, addr)
	dead := newTestClient(t, testbin.RefusingAddr(t))
	closed := NewClient(addr, ClientOptions{})
	closed.Close()
	for _, c := range []*Client{live, dead, closed} {
		if err := c.CallBatch(context.Background(), nil); err != nil {
			t.Fatalf("nil batch to %s: %v", c.Addr(), err)
		}
		if err := c.CallBatch(context.Background(), []BatchCall{}); err != nil {
			t.Fatalf("empty batch to %s: %v", c.Addr(), err)
		}
	}
	if n := requests.Load(); n != 0 {
		t.Fatalf("empty batches sent %d HTTP requests", n)
	}
}

// TestCallBatchLocalFailures covers batches that fail before anything is
// sent: every call carries the local error, which is neither a transport
// error nor a server's.
func TestCallBatchLocalFailures(t *testing.T) {
	var ran atomic.Int64
	methods := countingMethods(&ran, map[string]string{"count": "counted"})
	addr, requests := startCountingServer(t, ServerOptions{Methods: methods})
	c := newTestClient(t, addr)

	cases := []struct {
		name   string
		params any
	}{
		{"channel", make(chan int)},
		{"function", func() {}},
		{"scalar", "a string"},
		{"invalid raw JSON", json.RawMessage(`{"text":`)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var res any = "unchanged"
			calls := []BatchCall{
				{Method: "count", Result: &res},
				{Method: "echo", Params: tc.params},
				{Method: "count"},
			}
			err := c.CallBatch(context.Background(), calls)
			var e *Error
			if err == nil || IsTransport(err) || errors.As(err, &e) {
				t.Fatalf("CallBatch: %v, want a local error", err)
			}
			if !strings.Contains(err.Error(), "echo") {
				t.Fatalf("error %q does not name the call that failed", err)
			}
			wantBatchErr(t, calls, err)
			if res != "unchanged" {
				t.Fatalf("result written: %v", res)
			}
		})
	}
	if n := requests.Load(); n != 0 {
		t.Fatalf("batches that failed to encode sent %d HTTP requests", n)
	}
	if n := ran.Load(); n != 0 {
		t.Fatalf("%d handlers ran", n)
	}

	// Unrelated to encoding, but also decided before sending.
	c.Close()
	calls := []BatchCall{{Method: "count"}, {Method: "count"}}
	err := c.CallBatch(context.Background(), calls)
	if !errors.Is(err, ErrClientClosed) {
		t.Fatalf("batch after Close: %v, want ErrClientClosed", err)
	}
	wantBatchErr(t, calls, err)
	if n := requests.Load(); n != 0 {
		t.Fatalf("closed client sent %d HTTP requests", n)
	}
}
