package heal

import (
	"encoding/json"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/internal/testbin"
	"github.com/tpcd/tpcd/internal/testcluster"
	"github.com/tpcd/tpcd/rpc"
)

// TestSlotsServeAtOnce runs two coordinators that serve one cluster at
// once (--slots 2, each holding a slot of the shared log by --lease), a
// third as a standby for either slot, and two participants with an engine
// per slot. Clients call either coordinator: both commit, each in its own
// range of ids, and either answers for the other's transactions and keys
// (it passes the call on). Under load the first is SIGKILLed; the standby
// takes its slot over and finishes what it had in flight; killed too, its
// slot is adopted by the second, which hands it back to the first once
// that is restarted and waits for it. Every
// transaction whose commit a client called ends with an answer, from
// commit or from status; each committed one is on both participants, no
// other is on either, and nothing is left prepared.
func TestSlotsServeAtOnce(t *testing.T) {
	// c1 takes slot 0, c2 slot 1 (the first free one each); c3 waits.
	c, coords, logURI := startSharedLog(t, 3, 2, "--slots", "2")
	// A coordinator given another number of slots refuses to start while
	// these serve: it would put keys in other slots than they do.
	odd := standbyNode(t, t.TempDir(), "c4")
	args := slices.Clone(coords[2].args)
	for i, a := range args {
		switch a {
		case coords[2].addr:
			args[i] = odd.addr
		case coords[2].metrics:
			args[i] = odd.metrics
		case coords[2].state:
			args[i] = odd.state
		}
	}
	args[slices.Index(args, "--slots")+1] = "3"
	if _, errOut, code := testbin.Run(t, testbin.Binary(t), nil, "", args...); code == 0 || !strings.Contains(errOut, "serve 2 slot(s)") {
		t.Fatalf("a coordinator with --slots 3 on a log of 2: exit %d\n%s", code, errOut)
	}
	slotOf := func(n *node) int {
		var r api.PingReply
		if err := rpc.NewClient(n.addr, rpc.ClientOptions{}).Call(t.Context(), api.MethodPing, nil, &r); err != nil {
			t.Fatalf("ping %s: %v", n.name, err)
		}
		return r.Slot
	}
	if s0, s1 := slotOf(coords[0]), slotOf(coords[1]); s0 != 0 || s1 != 1 {
		t.Fatalf("c1 holds slot %d and c2 slot %d; want 0 and 1", s0, s1)
	}
	if err := testcluster.CommitOn(t.Context(), coords[0].addr, 2, "CREATE TABLE t (k int PRIMARY KEY)"); err != nil {
		t.Fatalf("create table: %v", err)
	}

	// Either coordinator answers for the other's transactions and keys.
	first := map[int]engine.TxID{}
	for i, n := range coords[:2] {
		var r api.TransactReply
		n0, n1 := engine.NodeID(0), engine.NodeID(1)
		key := "slots-" + strconv.Itoa(i)
		err := rpc.NewClient(n.addr, rpc.ClientOptions{}).Call(t.Context(), api.MethodTransact, api.TransactParams{Commit: true, Key: key, Statements: []api.StatementParams{
			{Node: &n0, SQL: "INSERT INTO t VALUES ($1)", Args: []any{i + 1}}, {Node: &n1, SQL: "INSERT INTO t VALUES ($1)", Args: []any{i + 1}}}}, &r)
		if err != nil || r.Outcome == nil || *r.Outcome != engine.OutcomeCommit {
			t.Fatalf("transact with key %s at %s: %v %+v", key, n.name, err, r)
		}
		if want := api.SlotOfKey(key, 2); api.SlotOfTx(r.TxID) != want {
			t.Fatalf("key %s's transaction %d is of slot %d; the key belongs to slot %d", key, r.TxID, api.SlotOfTx(r.TxID), want)
		}
		first[i] = r.TxID
		for _, other := range coords[:2] {
			var st engine.StatusReply
			if err := rpc.NewClient(other.addr, rpc.ClientOptions{}).Call(t.Context(), api.MethodStatus, api.StatusParams{TxID: r.TxID}, &st); err != nil || st.Outcome != engine.OutcomeCommit {
				t.Fatalf("status of %d at %s: %v %+v", r.TxID, other.name, err, st)
			}
			var again api.TransactReply
			if err := rpc.NewClient(other.addr, rpc.ClientOptions{}).Call(t.Context(), api.MethodTransact, api.TransactParams{Commit: true, Key: key, Statements: []api.StatementParams{
				{Node: &n0, SQL: "INSERT INTO t VALUES ($1)", Args: []any{i + 1}}}}, &again); err != nil || !again.Repeated || again.TxID != r.TxID {
				t.Fatalf("transact repeated with key %s at %s: %v %+v; want the first call's transaction %d, repeated", key, other.name, err, again, r.TxID)
			}
		}
	}

	// Four clients, two starting at each serving coordinator; two send
	// each transfer in one call with a key, which belongs to either slot.
	tr := startTransfers(func(w int) []string {
		addrs := c.coordAddrs()
		if w%2 == 1 {
			addrs[0], addrs[1] = addrs[1], addrs[0]
		}
		return addrs
	}, func(w int) func(*rpc.Failover, int) (txOutcome, bool) {
		if w >= 2 {
			return transferKeyed
		}
		return transfer
	})
	committedIn := func(slot int) int {
		return tr.committed(func(o txOutcome) bool { return api.SlotOfTx(o.tx) == slot })
	}
	testcluster.EventuallyWithin(t, time.Minute, "commits in both slots", func() bool { return committedIn(0) >= 20 && committedIn(1) >= 20 })
	before := committedIn(0)
	coords[0].proc.Cmd.Process.Kill()
	<-coords[0].proc.Exited()
	killed := time.Now()
	coords[2].waitServing(t, 30*time.Second)
	t.Logf("c3 serves %v after c1 was killed (lease %v)", time.Since(killed).Round(10*time.Millisecond), leaseTTL)
	if s := slotOf(coords[2]); s != 0 {
		t.Fatalf("c3 took slot %d; want the dead one's, 0", s)
	}
	// The clients that called c1 now call c2; c3 serves slot 0's new
	// transactions for whoever calls it.
	total := func() int { return committedIn(0) + committedIn(1) }
	after := total()
	testcluster.EventuallyWithin(t, time.Minute, "commits after the take-over", func() bool { return total() >= after+20 })
	var b engine.BeginReply
	if err := rpc.NewClient(coords[2].addr, rpc.ClientOptions{}).Call(t.Context(), api.MethodBegin, struct{}{}, &b); err != nil || api.SlotOfTx(b.TxID) != 0 {
		t.Fatalf("begin at c3: %v, tx %d; want a new transaction of slot 0", err, b.TxID)
	}
	if err := rpc.NewClient(coords[2].addr, rpc.ClientOptions{}).Call(t.Context(), api.MethodRollback, api.TxParams{TxID: b.TxID}, nil); err != nil {
		t.Fatal(err)
	}
	if committedIn(0) < before {
		t.Fatalf("slot 0 lost commits: %d before the kill, %d after", before, committedIn(0))
	}

	// c3 is killed too, with no standby left: c2 takes slot 0 over
	// itself, on a port of its own, and finishes what c3 had in flight.
	before = committedIn(0)
	coords[2].proc.Cmd.Process.Kill()
	<-coords[2].proc.Exited()
	killed = time.Now()
	waitOutput(t, coords[1], "took over a slot whose coordinator stopped")
	t.Logf("c2 serves slot 0 too %v after c3 was killed", time.Since(killed).Round(10*time.Millisecond))
	testcluster.EventuallyWithin(t, time.Minute, "commits in slot 0 after c2 took it over", func() bool { return committedIn(0) >= before+10 })
	// c2's status page lists the slot it adopted, with the state of its
	// coordinator there.
	if page := coords[1].statusPage(t); !regexp.MustCompile(`<tr id="slot-0"><td>0</td><td>[^<]+:\d+</td>\s*<td>\d+</td>`).MatchString(page) {
		t.Fatalf("c2's status page does not list slot 0 as adopted:\n%s", page)
	}

	// c1 comes back and waits as a standby, saying so in the log: c2
	// hands slot 0 back to it, and every slot has a process of its own
	// again. The clients go on meanwhile.
	before = committedIn(0)
	coords[0].startUnheld(t)
	restarted := time.Now()
	waitOutput(t, coords[1], "handing an adopted slot back")
	coords[0].waitServing(t, time.Minute)
	t.Logf("c1 serves slot 0 again %v after it was restarted", time.Since(restarted).Round(10*time.Millisecond))
	if s := slotOf(coords[0]); s != 0 {
		t.Fatalf("c1, restarted, took slot %d; want slot 0 back", s)
	}
	if page := coords[1].statusPage(t); strings.Contains(page, "Adopted slots") {
		t.Fatalf("c2's status page still lists an adopted slot after handing slot 0 back:\n%s", page)
	}
	testcluster.EventuallyWithin(t, time.Minute, "commits in slot 0 once c1 has it back", func() bool { return committedIn(0) >= before+10 })
	outcomes := tr.stop()

	// Each commit a client called and heard nothing back from is asked
	// about, at c2, until its outcome is known.
	cl := rpc.NewClient(coords[1].addr, rpc.ClientOptions{})
	defer cl.Close()
	asked := learnOutcomes(t, cl.Call, outcomes)
	outcomes = append(outcomes, txOutcome{tx: first[0], key: 1, state: "commit"}, txOutcome{tx: first[1], key: 2, state: "commit"})
	n := checkTransfers(t, c, outcomes, append(coords, c.parts...))
	t.Logf("%d transactions asked to commit, %d committed (%d in slot 0, %d in slot 1), %d learnt through status",
		len(outcomes), n, committedIn(0), committedIn(1), asked)

	// tpcd replay reads each slot's log of the shared log database.
	out, errOut, code := testbin.Run(t, testbin.Binary(t), nil, "", "replay", "--log-db", logURI, "--format", "json")
	var rep struct {
		Problems int `json:"problems"`
		Nodes    []struct {
			Node    string `json:"node"`
			Cluster string `json:"cluster"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 0 {
		t.Fatalf("tpcd replay of the shared log: exit %d, %v\n%s\n%s", code, err, out, errOut)
	}
	var names []string
	for _, n := range rep.Nodes {
		names = append(names, n.Node)
		if api.SlotOfCluster(n.Cluster) != map[string]int{"coordinator": 0, "coordinator.1": 1}[n.Node] {
			t.Errorf("replay: %s's cluster %s is not of its slot", n.Node, n.Cluster)
		}
	}
	if !slices.Equal(names, []string{"coordinator", "coordinator.1"}) || rep.Problems != 0 {
		t.Fatalf("replay of the shared log: nodes %v, %d problems; want both slots' coordinators, none:\n%s", names, rep.Problems, out)
	}
}
