package pgtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/tpcd/tpcd/db/embedpg"
)

// ClientBin returns the path of a PostgreSQL client program (psql,
// pgbench): beside the server binaries the tests use, else on PATH. A
// missing one fails the test, never skips it: make ensure-postgres
// installs them with the server.
func ClientBin(t testing.TB, name string) string {
	t.Helper()
	dir := os.Getenv(BinDirEnv)
	if dir == "" {
		dir, _ = embedpg.FindBinDir("")
	}
	if dir != "" {
		if p := filepath.Join(dir, name); isExecutable(p) {
			return p
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	t.Fatalf("%s not found beside the PostgreSQL server binaries (%q) nor on PATH: run make ensure-postgres", name, dir)
	return ""
}

func isExecutable(path string) bool {
	st, err := os.Stat(path)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}
