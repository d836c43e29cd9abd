package node_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/tpcd/tpcd/db/embedpg"
	"github.com/tpcd/tpcd/internal/pgtest"
	"github.com/tpcd/tpcd/node"
)

// TestDataServerWithoutPreparedTransactionsIsRefused: initdb leaves
// max_prepared_transactions at 0, which lets every commit abort.
func TestDataServerWithoutPreparedTransactionsIsRefused(t *testing.T) {
	for _, tc := range []struct {
		have     string
		maxConns int
		ok       bool
	}{
		{"0", 10, false},
		{"5", 10, false},
		{"5", 5, true},
	} {
		server := pgtest.NewCluster(t, embedpg.Options{Settings: map[string]string{"max_prepared_transactions": tc.have}})
		if err := server.CreateDatabase(context.Background(), "data"); err != nil {
			t.Fatal(err)
		}
		dbs, err := node.OpenDatabases(context.Background(), node.DatabaseSpec{
			LogURI: pgtest.NewDB(t), DataURI: server.URI("data"), NeedData: true, MaxConns: tc.maxConns,
		})
		if tc.ok {
			if err != nil {
				t.Fatalf("max_prepared_transactions %s, %d connections: %v", tc.have, tc.maxConns, err)
			}
			dbs.Close()
			continue
		}
		if err == nil {
			dbs.Close()
			t.Fatalf("max_prepared_transactions %s, %d connections: accepted", tc.have, tc.maxConns)
		}
		for _, want := range []string{
			"max_prepared_transactions = " + tc.have,
			"ALTER SYSTEM SET max_prepared_transactions = 10",
			"max_prepared_transactions = 10 in its postgresql.conf",
			"--max-conns",
		} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error lacks %q: %v", want, err)
			}
		}
	}
}

// TestLogServerWithoutSynchronousCommitWarns: the shared test server runs
// with synchronous_commit off; a connection string can turn it on.
func TestLogServerWithoutSynchronousCommitWarns(t *testing.T) {
	for _, tc := range []struct {
		query string
		warn  bool
	}{
		{"", true},
		{"&synchronous_commit=on", false},
	} {
		var out bytes.Buffer
		var mu sync.Mutex
		logger := slog.New(slog.NewTextHandler(lockedWriter{&mu, &out}, nil))
		dbs := openDBs(t, node.DatabaseSpec{LogURI: pgtest.NewDB(t) + tc.query, Logger: logger})
		dbs.Close()
		mu.Lock()
		warned := strings.Contains(out.String(), "synchronous_commit = off")
		mu.Unlock()
		if warned != tc.warn {
			t.Errorf("log URI%s: warned %v, want %v:\n%s", tc.query, warned, tc.warn, out.String())
		}
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
