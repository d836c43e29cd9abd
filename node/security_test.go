package node_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/internal/testcerts"
	"github.com/tpcd/tpcd/internal/testcluster"
	"github.com/tpcd/tpcd/node"
	"github.com/tpcd/tpcd/rpc"
)

// rpcAnswer posts body to url and returns the HTTP status and the JSON-RPC
// error code of the answer (0 for a result, -1 for an empty body).
func rpcAnswer(t *testing.T, url, contentType, token string, body []byte) (int, int) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if len(bytes.TrimSpace(raw)) == 0 {
		return resp.StatusCode, -1
	}
	var one struct {
		Error *struct {
			Code int `json:"code"`
		} `json:"error"`
		Result json.RawMessage `json:"result"`
	}
	if raw[0] == '[' {
		var many []json.RawMessage
		if err := json.Unmarshal(raw, &many); err != nil || len(many) == 0 {
			t.Fatalf("answer %q is not JSON-RPC", raw)
		}
		raw = many[0]
	}
	if err := json.Unmarshal(raw, &one); err != nil || (one.Error == nil && one.Result == nil) {
		t.Fatalf("answer %q is not JSON-RPC (%v)", raw, err)
	}
	if one.Error != nil {
		return resp.StatusCode, one.Error.Code
	}
	return resp.StatusCode, 0
}

// TestHostileInputWhileCommitting fires every kind of bad request at the
// coordinator and a participant while clients keep committing valid
// transactions: each bad request gets a JSON-RPC error, and nothing valid
// is lost or refused.
//
// Node-to-node methods need a peer token here. Well-formed protocol
// messages are trusted by design (a participant follows a coordinator of
// another cluster or a newer epoch when it holds nothing in doubt, which
// rolls back its open work), so only the token keeps strangers from
// sending them; the malformed ones are sent with the token, as a peer with
// a bug would, to reach the decoders.
func TestHostileInputWhileCommitting(t *testing.T) {
	const peerToken = "peer-secret"
	secure := node.Transport{Auth: rpc.Auth{PeerToken: peerToken}, PeerToken: peerToken}
	c := testcluster.Start(t, testcluster.Config{
		Participants: 2,
		Coordinator:  func(o *node.CoordinatorOptions) { o.Transport = secure },
		Participant:  func(_ int, o *node.ParticipantOptions) { o.Transport = secure },
	})
	open := c.Begin() // a transaction of the victim, open during the attack
	c.Exec(open, 0, "INSERT INTO kv VALUES (1000, 'open')")

	// Valid work, concurrently.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var committed []int
	var mu sync.Mutex
	for w := range 2 {
		wg.Go(func() {
			for k := w; ; k += 2 {
				select {
				case <-stop:
					return
				default:
				}
				tx := c.Begin()
				c.Exec(tx, 0, "INSERT INTO kv VALUES ($1, 'ok')", k)
				c.Exec(tx, 1, "INSERT INTO kv VALUES ($1, 'ok')", k)
				if r := c.Commit(tx); r.Outcome != engine.OutcomeCommit {
					t.Errorf("valid transaction %d aborted: %s", tx, r.Reason)
					return
				}
				mu.Lock()
				committed = append(committed, k)
				mu.Unlock()
			}
		})
	}

	req := func(method, params string) []byte {
		return []byte(`{"jsonrpc":"2.0","id":1,"method":"` + method + `","params":` + params + `}`)
	}
	deep := strings.Repeat("[", 100000) + strings.Repeat("]", 100000)
	type hostile struct {
		name  string
		body  []byte
		code  int
		token string
	}
	coordCases := []hostile{
		{"malformed json", []byte(`{"jsonrpc":"2.0","id":1,"method":`), rpc.CodeParseError, ""},
		{"empty body", nil, rpc.CodeParseError, ""},
		{"not an object", []byte(`42`), rpc.CodeParseError, ""},
		{"empty batch", []byte(`[]`), rpc.CodeInvalidRequest, ""},
		{"wrong version", []byte(`{"jsonrpc":"1.0","id":1,"method":"begin"}`), rpc.CodeInvalidRequest, ""},
		{"invalid utf-8 in sql", req("exec", fmt.Sprintf(`{"tx":%d,"node":0,"sql":"SELECT '\xff\xfe'"}`, open)), rpc.CodeParseError, ""},
		{"invalid utf-8 in method", []byte("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"beg\xc3\x28in\"}"), rpc.CodeParseError, ""},
		{"overlong utf-8", req("status", "{\"tx\":1,\"x\":\"\xc0\xaf\"}"), rpc.CodeParseError, ""},
		{"unknown method", req("drop_everything", `{}`), rpc.CodeMethodNotFound, ""},
		{"reserved method", req("rpc.discover", `{}`), rpc.CodeMethodNotFound, ""},
		{"method of another role", req("tpcd.exec", `{}`), rpc.CodeMethodNotFound, peerToken},
		{"peer method without the peer token", req("tpcd.vote", `{"from":0,"tx":1,"vote":"no"}`), rpc.CodeUnauthorized, ""},
		{"wrong type", req("exec", `{"tx":"one","node":0,"sql":"x"}`), rpc.CodeInvalidParams, ""},
		{"params as array", req("commit", `[1]`), rpc.CodeInvalidParams, ""},
		{"null params", req("exec", `null`), rpc.CodeInvalidParams, ""},
		{"unknown field", req("commit", `{"tx":1,"force":true}`), rpc.CodeInvalidParams, ""},
		{"trailing garbage in params", []byte(`{"jsonrpc":"2.0","id":1,"method":"status","params":{"tx":1} x}`), rpc.CodeParseError, ""},
		{"missing sql", req("exec", fmt.Sprintf(`{"tx":%d,"node":0}`, open)), rpc.CodeInvalidParams, ""},
		{"huge txid", req("status", `{"tx":18446744073709551616}`), rpc.CodeInvalidParams, ""},
		{"huge exponent", req("status", `{"tx":1e400}`), rpc.CodeInvalidParams, ""},
		{"fractional txid", req("commit", `{"tx":1.5}`), rpc.CodeInvalidParams, ""},
		{"negative txid", req("status", `{"tx":-3}`), rpc.CodeInvalidParams, ""},
		{"zero txid", req("commit", `{"tx":0}`), rpc.CodeInvalidParams, ""},
		{"unknown txid", req("commit", `{"tx":987654}`), rpc.CodeUnknownTx, ""},
		{"max txid", req("rollback", `{"tx":18446744073709551615}`), rpc.CodeUnknownTx, ""},
		{"huge node id", req("exec", fmt.Sprintf(`{"tx":%d,"node":9223372036854775807,"sql":"select 1"}`, open)), rpc.CodeBadNode, ""},
		{"node id overflow", req("exec", fmt.Sprintf(`{"tx":%d,"node":9223372036854775808,"sql":"select 1"}`, open)), rpc.CodeInvalidParams, ""},
		{"negative node", req("exec", fmt.Sprintf(`{"tx":%d,"node":-1,"sql":"select 1"}`, open)), rpc.CodeBadNode, ""},
		{"unknown node", req("execute", `{"node":7,"sql":"select 1"}`), rpc.CodeBadNode, ""},
		{"deeply nested", []byte(deep), rpc.CodeParseError, ""},
		{"deeply nested args", req("exec", `{"tx":987654,"node":0,"sql":"x","args":`+deep+`}`), rpc.CodeParseError, ""},
		{"oversized", req("exec", `{"tx":1,"node":0,"sql":"`+strings.Repeat("x", 2<<20)+`"}`), rpc.CodeInvalidRequest, ""},
		{"forged vote", req("tpcd.vote", `{"from":9,"tx":1,"vote":"yes"}`), 0, peerToken},
		{"forged vote with bad enum", req("tpcd.vote", `{"from":0,"tx":1,"vote":"maybe"}`), rpc.CodeInvalidParams, peerToken},
		{"forged ack for the open transaction", req("tpcd.ack", fmt.Sprintf(`{"from":0,"tx":%d,"outcome":"commit"}`, open)), 0, peerToken},
		{"forged inquiry", req("tpcd.inquire", `{"from":-5,"tx":3,"tx_epoch":99}`), 0, peerToken},
		{"zero tx message", req("tpcd.vote", `{"from":0,"tx":0,"vote":"yes"}`), rpc.CodeInvalidParams, peerToken},
		{"vote without a vote", req("tpcd.vote", fmt.Sprintf(`{"from":0,"tx":%d}`, open)), rpc.CodeInvalidParams, peerToken},
		{"ack without an outcome", req("tpcd.ack", fmt.Sprintf(`{"from":0,"tx":%d}`, open)), rpc.CodeInvalidParams, peerToken},
		{"wrong token", req("begin", `{}`), 0, "not-a-token"}, // client methods are open here
	}
	cluster, epoch := c.Coord.Cluster(), c.Coord.Epoch()
	partCases := []hostile{
		{"stranger cluster without the token", req("tpcd.prepare", `{"cluster":"not-ours","epoch":999,"tx":5,"stmts":1}`), rpc.CodeUnauthorized, ""},
		{"stranger cluster with a wrong token", req("tpcd.exec", `{"cluster":"not-ours","epoch":999,"tx":5,"stmt":0,"sql":"select 1"}`), rpc.CodeUnauthorized, "guess"},
		{"stale epoch decide", req("tpcd.decide", fmt.Sprintf(`{"cluster":"%s","epoch":0,"tx":%d,"tx_epoch":1,"outcome":"commit"}`, cluster, open)), 0, peerToken},
		{"decide for an unknown tx", req("tpcd.decide", fmt.Sprintf(`{"cluster":"%s","epoch":%d,"tx":987654,"tx_epoch":%d,"outcome":"commit"}`, cluster, epoch, epoch)), 0, peerToken},
		{"prepare for an unknown tx", req("tpcd.prepare", fmt.Sprintf(`{"cluster":"%s","epoch":%d,"tx":987655,"stmts":-4}`, cluster, epoch)), 0, peerToken},
		{"zero tx", req("tpcd.exec", `{"cluster":"x","epoch":1,"tx":0,"stmt":0,"sql":"select 1"}`), rpc.CodeInvalidParams, peerToken},
		{"negative tx", req("tpcd.exec", `{"cluster":"x","epoch":1,"tx":-1,"stmt":0,"sql":"select 1"}`), rpc.CodeInvalidParams, peerToken},
		{"huge epoch", req("tpcd.exec", `{"cluster":"x","epoch":1e30,"tx":1,"stmt":0,"sql":"select 1"}`), rpc.CodeInvalidParams, peerToken},
		{"bad outcome", req("tpcd.decide", `{"cluster":"x","epoch":1,"tx":1,"tx_epoch":1,"outcome":"perhaps"}`), rpc.CodeInvalidParams, peerToken},
		{"decision without an outcome", req("tpcd.decide", fmt.Sprintf(`{"cluster":"%s","epoch":%d,"tx":%d,"tx_epoch":%d}`, cluster, epoch, open, epoch)), rpc.CodeInvalidParams, peerToken},
		{"client method on a participant", req("begin", `{}`), rpc.CodeMethodNotFound, peerToken},
		{"direct statement without sql", req("direct_exec", fmt.Sprintf(`{"cluster":"%s","epoch":%d,"tx":%d,"stmt":0}`, cluster, epoch, open)), rpc.CodeInvalidParams, ""},
		{"direct statement without an epoch", req("direct_exec", fmt.Sprintf(`{"cluster":"%s","tx":987656,"stmt":0,"sql":"select 1"}`, cluster)), rpc.CodeInvalidParams, ""},
		{"direct statement out of order", req("direct_exec", fmt.Sprintf(`{"cluster":"%s","epoch":%d,"tx":987656,"stmt":3,"sql":"select 1"}`, cluster, epoch)), rpc.CodeAborted, ""},
		{"direct statement of another cluster", req("direct_exec", `{"cluster":"not-ours","epoch":1,"tx":987656,"stmt":1,"sql":"select 1"}`), rpc.CodeAborted, ""},
		{"invalid utf-8", req("tpcd.exec", "{\"cluster\":\"\xff\"}"), rpc.CodeParseError, peerToken},
		{"malformed", []byte(`{"jsonrpc":"2.0","id":1,"method":"tpcd.exec","params":{"cluster":`), rpc.CodeParseError, peerToken},
	}
	run := func(addr string, cases []hostile) {
		url := "http://" + addr + "/rpc"
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				status, code := rpcAnswer(t, url, "application/json", tc.token, tc.body)
				if code != tc.code {
					t.Fatalf("HTTP %d, code %d; want code %d", status, code, tc.code)
				}
			})
		}
	}
	for range 3 { // repeated, so they interleave with the valid work
		run(c.CoordAddr, coordCases)
		run(c.PartAddrs[1], partCases)
	}

	// Transport-level refusals.
	url := "http://" + c.CoordAddr + "/rpc"
	if s, code := rpcAnswer(t, url, "text/plain", "", req("begin", `{}`)); s != 415 || code != rpc.CodeInvalidRequest {
		t.Errorf("text/plain: HTTP %d code %d", s, code)
	}
	if resp, err := http.Get(url); err != nil || resp.StatusCode != 405 {
		t.Errorf("GET: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	// A big batch of garbage.
	var batch []string
	for i := range 500 {
		batch = append(batch, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"status","params":{"tx":"%d"}}`, i, i))
	}
	if _, code := rpcAnswer(t, url, "application/json", "", []byte("["+strings.Join(batch, ",")+"]")); code != rpc.CodeInvalidParams {
		t.Errorf("batch of bad requests: code %d", code)
	}

	close(stop)
	wg.Wait()

	// The victim's open transaction survived the attack and commits.
	c.Exec(open, 1, "INSERT INTO kv VALUES (1000, 'open')")
	if r := c.Commit(open); r.Outcome != engine.OutcomeCommit {
		t.Fatalf("open transaction after the attack: %s (%s)", r.Outcome, r.Reason)
	}
	mu.Lock()
	want := append(slices.Clone(committed), 1000)
	mu.Unlock()
	slices.Sort(want)
	if len(want) < 3 {
		t.Fatalf("only %d valid transactions committed during the attack", len(want)-1)
	}
	testcluster.Eventually(t, "everything committed everywhere", func() bool { return c.Status(open).State == "committed" })
	// The workers' last commits were answered once decided, and may still
	// be in phase two on a participant: the keys are read until they are
	// all there, and never more than that.
	var got [2][]int
	testcluster.Eventually(t, "every committed key on both nodes", func() bool {
		for i := range 2 {
			got[i] = dataKeys(t, c.Parts[i], c, i)
			if len(got[i]) > len(want) {
				t.Fatalf("node %d keys %v, more than the committed %v", i, got[i], want)
			}
		}
		return slices.Equal(got[0], want) && slices.Equal(got[1], want)
	})
	t.Logf("%d valid transactions committed during the attack", len(want)-1)
}

// dataKeys reads kv on participant i through the coordinator.
func dataKeys(t *testing.T, _ *node.Participant, c *testcluster.Cluster, i int) []int {
	t.Helper()
	tx := c.Begin()
	r := c.Exec(tx, i, "SELECT k FROM kv ORDER BY k")
	c.Commit(tx)
	var ks []int
	for _, row := range r.Result.Rows {
		var k int
		fmt.Sscan(fmt.Sprint(row[0]), &k)
		ks = append(ks, k)
	}
	return ks
}

func TestLimitsOverRPC(t *testing.T) {
	c := testcluster.Start(t, testcluster.Config{
		Participants: 2,
		Coordinator: func(o *node.CoordinatorOptions) {
			o.Engine.MaxStatements = 3
			o.MaxOpenPerClient = 2
			o.AdmissionWait = 100 * time.Millisecond
		},
	})
	// Statements per transaction.
	tx := c.Begin()
	for k := range 3 {
		c.Exec(tx, k%2, "INSERT INTO kv VALUES ($1, 'x')", k)
	}
	_, err := c.TryExec(tx, 0, "INSERT INTO kv VALUES (99, 'x')")
	if !rpc.IsCode(err, rpc.CodeLimit) || !strings.Contains(err.Error(), "3 statements") {
		t.Fatalf("fourth statement: %v, want code %d naming the limit", err, rpc.CodeLimit)
	}
	if r := c.Commit(tx); r.Outcome != engine.OutcomeCommit {
		t.Fatalf("commit after the refused statement: %+v", r)
	}

	// Open transactions per client.
	a, b := c.Begin(), c.Begin()
	var r engine.BeginReply
	err = c.Call(api.MethodBegin, struct{}{}, &r)
	if !rpc.IsCode(err, rpc.CodeLimit) || !strings.Contains(err.Error(), "127.0.0.1") {
		t.Fatalf("third begin: %v, want code %d naming the client", err, rpc.CodeLimit)
	}
	c.Rollback(a)
	third := c.Begin()
	c.Exec(b, 0, "INSERT INTO kv VALUES (10, 'b')")
	if r := c.Commit(b); r.Outcome != engine.OutcomeCommit {
		t.Fatalf("commit b: %+v", r)
	}
	fourth := c.Begin()
	if third == fourth || third == 0 {
		t.Fatalf("begins after freeing slots: %d, %d", third, fourth)
	}
	// A client whose transactions are aborted by the idle timeout gets its
	// slots back as well: covered by the same pruning, which asks the
	// engine which transactions are still undecided.
	c.Rollback(third)
	c.Rollback(fourth)
}

// TestPeersMustAuthenticate runs a cluster with mutual TLS and peer tokens
// where participant 1 is an impostor: first with a certificate from another
// CA, which the coordinator refuses to talk to; the work on participant 0
// still commits.
func TestPeersMustAuthenticate(t *testing.T) {
	dir := t.TempDir()
	ca := testcerts.NewCA(t, dir, "cluster")
	other := testcerts.NewCA(t, dir, "other")
	transport := func(pair testcerts.Pair, token string) node.Transport {
		files := rpc.TLSFiles{Cert: pair.Cert, Key: pair.Key, CA: ca.File}
		server, err := files.ServerTLS()
		if err != nil {
			t.Fatal(err)
		}
		client, err := files.ClientTLS()
		if err != nil {
			t.Fatal(err)
		}
		return node.Transport{Auth: rpc.Auth{ClientToken: "client-tok", PeerToken: "peer-tok"}, PeerToken: token, ServerTLS: server, ClientTLS: client}
	}
	clientPair := ca.Issue(t, "client")
	clientTLS, err := rpc.TLSFiles{Cert: clientPair.Cert, Key: clientPair.Key, CA: ca.File}.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	c := testcluster.Start(t, testcluster.Config{
		Participants: 3,
		NoTable:      true,
		Client:       rpc.ClientOptions{Token: "client-tok", TLS: clientTLS},
		Coordinator: func(o *node.CoordinatorOptions) {
			o.Transport = transport(ca.Issue(t, "coordinator"), "peer-tok")
			o.Engine.ExecTimeout = 2 * time.Second
		},
		Participant: func(i int, o *node.ParticipantOptions) {
			switch i {
			case 0:
				o.Transport = transport(ca.Issue(t, "p0"), "peer-tok")
			case 1: // impostor certificate
				o.Transport = transport(other.Issue(t, "p1"), "peer-tok")
			case 2: // right certificate, wrong token
				o.Transport = transport(ca.Issue(t, "p2"), "wrong-tok")
			}
		},
	})
	tx := c.Begin()
	c.Exec(tx, 0, "CREATE TABLE kv (k int PRIMARY KEY, v text)")
	c.Exec(tx, 0, "INSERT INTO kv VALUES (1, 'ok')")
	if r := c.Commit(tx); r.Outcome != engine.OutcomeCommit {
		t.Fatalf("commit on the genuine participant: %+v", r)
	}

	// The impostor is never reached: the coordinator does not trust its
	// certificate.
	tx = c.Begin()
	_, err = c.TryExec(tx, 1, "SELECT 1")
	if !rpc.IsCode(err, rpc.CodeAborted) || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("exec on the impostor: %v, want aborted as unreachable", err)
	}
	testcluster.Eventually(t, "impostor reported unreachable", func() bool {
		h := c.Coord.Nodes()[1]
		return !h.Reachable && strings.Contains(h.LastError, "certificate")
	})
	c.Rollback(tx)

	// Participant 2 answers with the wrong token: its result never
	// counts, so the statement times out.
	tx = c.Begin()
	_, err = c.TryExec(tx, 2, "SELECT 1")
	if !rpc.IsCode(err, rpc.CodeAborted) || !strings.Contains(err.Error(), "did not answer") {
		t.Fatalf("exec on the participant with the wrong token: %v, want an exec timeout", err)
	}
	c.Rollback(tx)
}

// TestMethodsWithoutParamsAreStrict: begin, nodes and ping take no params,
// and refuse positional ones, members and null instead of ignoring them.
func TestMethodsWithoutParamsAreStrict(t *testing.T) {
	c := testcluster.Start(t, testcluster.Config{Participants: 1, NoTable: true})
	url := "http://" + c.CoordAddr + "/rpc"
	cases := []struct {
		method, params string // params "" means no params member
		code           int
	}{
		{api.MethodBegin, "", 0},
		{api.MethodBegin, `{}`, 0},
		{api.MethodBegin, `[]`, rpc.CodeInvalidParams},
		{api.MethodBegin, `[1]`, rpc.CodeInvalidParams},
		{api.MethodBegin, `{"tx":1}`, rpc.CodeInvalidParams},
		{api.MethodBegin, `null`, rpc.CodeInvalidParams},
		{api.MethodNodes, `{}`, 0},
		{api.MethodNodes, `{"node":0}`, rpc.CodeInvalidParams},
		{api.MethodNodes, `["x"]`, rpc.CodeInvalidParams},
		{api.MethodPing, "", 0},
		{api.MethodPing, `{"cluster":"x"}`, rpc.CodeInvalidParams},
	}
	ask := func(who, url, method, params string, want int) {
		t.Helper()
		body := `{"jsonrpc":"2.0","id":1,"method":"` + method + `"`
		if params != "" {
			body += `,"params":` + params
		}
		body += "}"
		if status, code := rpcAnswer(t, url, "application/json", "", []byte(body)); status != http.StatusOK || code != want {
			t.Errorf("%s %s: HTTP %d code %d, want code %d", who, body, status, code, want)
		}
	}
	for _, tc := range cases {
		ask("coordinator", url, tc.method, tc.params, tc.code)
	}
	// A participant's ping is as strict as the coordinator's.
	part := "http://" + c.PartAddrs[0] + "/rpc"
	for _, tc := range []struct {
		params string
		code   int
	}{{"", 0}, {`{"cluster":"x"}`, rpc.CodeInvalidParams}, {`null`, rpc.CodeInvalidParams}} {
		ask("participant", part, api.MethodPing, tc.params, tc.code)
	}
}
