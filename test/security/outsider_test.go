package security

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/rpc"
)

// outsider sends JSON-RPC the way a stranger with curl would: one HTTP POST
// of hand-made JSON per request, with whatever token it has (none, a wrong
// one, the client token).
type outsider struct {
	hc *http.Client
}

// answer is what came back to an outsider's request.
type answer struct {
	status int
	// code is the JSON-RPC error code, 0 for a result.
	code   int
	result json.RawMessage
}

func (a answer) refused() bool {
	return (a.status == http.StatusUnauthorized || a.status == http.StatusForbidden) && a.code == rpc.CodeUnauthorized
}

func (o outsider) post(t *testing.T, addr, token, method string, params any) answer {
	t.Helper()
	raw, err := json.Marshal(params)
	if err != nil {
		t.Fatal(err)
	}
	body := fmt.Sprintf(`{"jsonrpc":"2.0","id":1,"method":%q,"params":%s}`, method, raw)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/rpc", bytes.NewReader([]byte(body)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := o.hc.Do(req)
	if err != nil {
		t.Fatalf("%s to %s: %v", method, addr, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	var msg struct {
		Result json.RawMessage `json:"result"`
		Error  *struct {
			Code int `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(out, &msg); err != nil {
		t.Fatalf("%s to %s: HTTP %d, answer %q is not JSON-RPC", method, addr, resp.StatusCode, out)
	}
	a := answer{status: resp.StatusCode, result: msg.Result}
	if msg.Error != nil {
		a.code = msg.Error.Code
	}
	return a
}

// waitPing waits until the node at addr answers tpcd.ping to this outsider
// with token, and returns the answer.
func (o outsider) waitPing(t *testing.T, addr, token string) api.PingReply {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		body := []byte(`{"jsonrpc":"2.0","id":1,"method":"tpcd.ping","params":{}}`)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/rpc", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := o.hc.Do(req)
		if err == nil {
			var msg struct {
				Result *api.PingReply `json:"result"`
			}
			err = json.NewDecoder(resp.Body).Decode(&msg)
			resp.Body.Close()
			if err == nil && msg.Result != nil {
				cancel()
				return *msg.Result
			}
		}
		cancel()
		if time.Now().After(deadline) {
			t.Fatalf("%s never answered tpcd.ping: %v", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// forgery is one node-to-node message as a stranger would send it: well
// formed, naming the real cluster and epoch (tpcd.ping tells them), so
// that only credentials stand in its way.
type forgery struct {
	to  string // "coordinator" or "participant"
	msg engine.Message
}

// forgeries are the messages that would let a stranger run SQL on a
// participant and commit it (exec, prepare, decide), or steer the
// coordinator's transactions (vote, exec_result, ack).
func forgeries(cluster string, epoch engine.Epoch) []forgery {
	const tx = 1 << 40 // no transaction of the victims
	h := engine.Header{Cluster: cluster, Epoch: epoch}
	return []forgery{
		{"participant", engine.ExecRequest{Header: h, TxID: tx, SQL: "CREATE TABLE forged (k int)"}},
		{"participant", engine.PrepareRequest{Header: h, TxID: tx, Stmts: 1}},
		{"participant", engine.DecisionRequest{Header: h, TxID: tx, TxEpoch: epoch, Outcome: engine.OutcomeCommit}},
		{"coordinator", engine.VoteMessage{Cluster: cluster, TxID: tx, Vote: engine.VoteYes}},
		{"coordinator", engine.ExecResult{Cluster: cluster, TxID: tx, Err: "forged"}},
		{"coordinator", engine.AckMessage{Cluster: cluster, TxID: tx, Outcome: engine.OutcomeCommit}},
	}
}

// sendForgeries sends every forgery with token to its node and reports
// any that was not refused for want of credentials.
func (o outsider) sendForgeries(t *testing.T, coord, participant, token string, ping api.PingReply) {
	t.Helper()
	for _, f := range forgeries(ping.Cluster, ping.Epoch) {
		addr := coord
		if f.to == "participant" {
			addr = participant
		}
		if a := o.post(t, addr, token, f.msg.Method(), f.msg); !a.refused() {
			t.Errorf("forged %s to the %s with token %q: HTTP %d code %d, want 401 or 403 with code %d",
				f.msg.Method(), f.to, token, a.status, a.code, rpc.CodeUnauthorized)
		}
	}
}

// transaction runs one transaction across participants 0..n-1 through the
// coordinator as a client would, with token, and fails the test unless it
// commits.
func (o outsider) transaction(t *testing.T, coord, token string, n int, sql string) {
	t.Helper()
	a := o.post(t, coord, token, api.MethodBegin, struct{}{})
	var b engine.BeginReply
	if a.code != 0 || json.Unmarshal(a.result, &b) != nil {
		t.Fatalf("begin: HTTP %d code %d", a.status, a.code)
	}
	for i := range n {
		node := engine.NodeID(i)
		if a := o.post(t, coord, token, api.MethodExec, api.ExecParams{TxID: b.TxID, Node: &node, SQL: sql}); a.code != 0 {
			t.Fatalf("exec on %d: HTTP %d code %d", i, a.status, a.code)
		}
	}
	a = o.post(t, coord, token, api.MethodCommit, api.TxParams{TxID: b.TxID})
	var out engine.OutcomeReply
	if a.code != 0 || json.Unmarshal(a.result, &out) != nil || out.Outcome != engine.OutcomeCommit {
		t.Fatalf("commit: HTTP %d code %d %s", a.status, a.code, a.result)
	}
}
