package statuspage_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/internal/pgtest"
	"github.com/tpcd/tpcd/internal/testcluster"
	"github.com/tpcd/tpcd/metrics"
	"github.com/tpcd/tpcd/node"
	"github.com/tpcd/tpcd/statuspage"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// chromium finds the browser, installing it with scripts/ensure-chromium.sh
// when missing: the test never skips.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	out, err := exec.Command("../scripts/ensure-chromium.sh").CombinedOutput()
	if err != nil {
		t.Fatalf("chromium is missing and scripts/ensure-chromium.sh failed: %v\n%s", err, out)
	}
	p, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium still missing after scripts/ensure-chromium.sh: %v", err)
	}
	return p
}

// headless runs chromium once against url with extra flags and returns its
// standard output. Each run gets a new empty profile and reaches nothing
// but the page.
func headless(t *testing.T, bin, url string, extra ...string) string {
	t.Helper()
	profile := t.TempDir()
	args := append([]string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--user-data-dir=" + profile,
	}, extra...)
	args = append(args, url)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium %v: %v\n%s", extra, err, stderr.String())
	}
	return string(out)
}

func TestStatusPageInHeadlessChromium(t *testing.T) {
	bin := chromium(t)
	c := testcluster.Start(t, testcluster.Config{Participants: 2})

	// One committed transaction across both participants, one rolled back,
	// and one left open so that the page has something in flight.
	tx := c.Begin()
	c.Exec(tx, 0, "INSERT INTO kv VALUES (1, 'left')")
	c.Exec(tx, 1, "INSERT INTO kv VALUES (1, 'right')")
	c.CommitApplied(tx)
	rolled := c.Begin()
	c.Exec(rolled, 0, "INSERT INTO kv VALUES (2, 'never')")
	c.Rollback(rolled)
	open := c.Begin()
	c.Exec(open, 1, "INSERT INTO kv VALUES (3, 'open')")
	testcluster.Eventually(t, "participants reachable", func() bool {
		for _, n := range c.Coord.Nodes() {
			if !n.Reachable {
				return false
			}
		}
		return true
	})

	// The page shows the snapshot the coordinator refreshes every second.
	testcluster.Eventually(t, "all three transactions in the latest snapshot", func() bool {
		s, err := c.Coord.LatestSnapshot()
		if err != nil {
			return false
		}
		inFlight := func(id engine.TxID) bool {
			return slices.ContainsFunc(s.InFlight, func(tx engine.TxSummary) bool { return tx.TxID == id })
		}
		ended := func(id engine.TxID) bool {
			return slices.ContainsFunc(s.Recent, func(tx engine.StatusReply) bool { return tx.TxID == id })
		}
		return ended(tx) && (ended(rolled) || inFlight(rolled)) && inFlight(open)
	})

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := metrics.Serve(ln, metrics.ServerOptions{
		Registry: metrics.NewRegistry(), Health: &metrics.Health{}, Logger: testcluster.Logger(t),
		Page: statuspage.Handler(c.Coord.LatestSnapshot, statuspage.Options{Refresh: 2 * time.Second}),
	})
	defer srv.Close()
	url := "http://" + ln.Addr().String() + "/"

	// The page is plain HTML with a strict policy.
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'none'") {
		t.Fatalf("headers %v", resp.Header)
	}
	if strings.Contains(string(raw), "<script") || strings.Contains(string(raw), "http://") || strings.Contains(string(raw), "https://") {
		t.Fatalf("page loads or runs something:\n%s", raw)
	}

	dom := headless(t, bin, url, "--dump-dom")
	row := regexp.MustCompile(fmt.Sprintf(`(?s)<tr class="outcome-commit" id="tx-%d"><td>%d</td><td>committed</td><td>commit</td>`, tx, tx))
	if !row.MatchString(dom) {
		t.Fatalf("the page does not show transaction %d committed:\n%s", tx, dom)
	}
	for _, want := range []string{
		fmt.Sprintf(`id="tx-%d"`, rolled), "rolled back by client",
		`<meta http-equiv="refresh" content="2">`,
		c.PartAddrs[0], c.PartAddrs[1], `class="ok">reachable`,
		`id="in-flight-table"`, fmt.Sprintf("<td>%d</td><td>active</td>", open),
		c.Coord.Cluster(),
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	if m := regexp.MustCompile(`id="committed">(\d+)<`).FindStringSubmatch(dom); m == nil || m[1] == "0" {
		t.Errorf("committed count missing or zero: %v", m)
	}

	shot := filepath.Join(t.TempDir(), "status-page.png")
	headless(t, bin, url, "--screenshot="+shot, "--window-size=1280,1000", "--hide-scrollbars")
	info, err := os.Stat(shot)
	if err != nil || info.Size() == 0 {
		t.Fatalf("no screenshot at %s: %v", shot, err)
	}
	t.Logf("screenshot of the status page: %s (%d bytes)", shot, info.Size())
	if dir := os.Getenv("TPCD_SCREENSHOT_DIR"); dir != "" {
		png, _ := os.ReadFile(shot)
		if err := os.WriteFile(filepath.Join(dir, "status-page.png"), png, 0o644); err != nil {
			t.Errorf("keep screenshot: %v", err)
		}
	}

	c.Rollback(open)
}

// TestAdoptedSlotsShown renders the page of a coordinator that adopted two
// slots, one of them with a transaction in doubt and one whose state is
// unavailable: each is listed with its address, the transaction in doubt
// with its slot. A coordinator that adopted none shows no such section.
func TestAdoptedSlotsShown(t *testing.T) {
	own := func() (node.CoordinatorSnapshot, error) {
		return node.CoordinatorSnapshot{Cluster: "c-own", Epoch: 3, Taken: time.Now()}, nil
	}
	stuck := engine.TxSummary{StatusReply: engine.StatusReply{TxID: 4711, State: "committing", Participants: []engine.NodeID{0, 1}, Pending: []engine.NodeID{1}, Reason: "waiting for p1"}}
	adopted := []statuspage.AdoptedSlot{
		{Slot: 1, Address: "127.0.0.1:7001", Snapshot: node.CoordinatorSnapshot{Epoch: 9, InFlight: []engine.TxSummary{stuck}, InDoubt: []engine.TxSummary{stuck}, Committed: 12}},
		{Slot: 2, Address: "127.0.0.1:7002", Err: errors.New("no snapshot yet")},
	}
	render := func(opts statuspage.Options) string {
		rec := httptest.NewRecorder()
		statuspage.Handler(own, opts).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("status %d:\n%s", rec.Code, rec.Body)
		}
		return rec.Body.String()
	}

	page := render(statuspage.Options{Adopted: func() []statuspage.AdoptedSlot { return adopted }})
	for _, want := range []string{
		"<h2>Adopted slots</h2>",
		`<tr id="slot-1"><td>1</td><td>127.0.0.1:7001</td>`, "<td>9</td><td>1</td><td>1</td><td>12</td><td>0</td>",
		`<tr id="slot-2"><td>2</td><td>127.0.0.1:7002</td>`, "state unavailable</span>: no snapshot yet",
		`id="adopted-in-doubt"`, "<tr><td>1</td><td>4711</td><td>committing</td><td>p0, p1</td><td>p1</td>",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q:\n%s", want, page)
		}
	}
	// The node's own counts stay its own.
	if !strings.Contains(page, `in doubt <b id="in-doubt">0</b>`) {
		t.Errorf("the node's own in-doubt count took in the adopted slot's:\n%s", page)
	}

	for _, opts := range []statuspage.Options{{}, {Adopted: func() []statuspage.AdoptedSlot { return nil }}} {
		if page := render(opts); strings.Contains(page, "Adopted slots") {
			t.Errorf("a coordinator that adopted no slot shows the section:\n%s", page)
		}
	}
}
