package embedpg

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// debianBinGlob is where Debian and Ubuntu install server binaries, one
// directory per major version, none of them on PATH.
const debianBinGlob = "/usr/lib/postgresql/*/bin"

// FindBinDir returns the directory holding initdb and postgres.
//
// A non-empty flag wins and must name such a directory. Otherwise initdb is
// looked up on PATH, then in the newest /usr/lib/postgresql/*/bin. The error
// says how to get the binaries when none are found.
func FindBinDir(flag string) (string, error) {
	if flag != "" {
		dir, err := filepath.Abs(flag)
		if err != nil {
			return "", fmt.Errorf("postgres bin dir %q: %w", flag, err)
		}
		if err := checkBinDir(dir); err != nil {
			return "", err
		}
		return dir, nil
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		// A symlink on PATH (e.g. /usr/local/bin/initdb) stands for the real
		// bin directory, which also holds the tools a symlink farm may lack.
		candidates := []string{filepath.Dir(p)}
		if real, err := filepath.EvalSymlinks(p); err == nil {
			candidates = append([]string{filepath.Dir(real)}, candidates...)
		}
		for _, dir := range candidates {
			if abs, err := filepath.Abs(dir); err == nil && checkBinDir(abs) == nil {
				return abs, nil
			}
		}
	}
	matches, _ := filepath.Glob(debianBinGlob)
	sort.Slice(matches, func(i, j int) bool {
		return versionKey(matches[i]) > versionKey(matches[j])
	})
	for _, dir := range matches {
		if checkBinDir(dir) == nil {
			return dir, nil
		}
	}
	return "", errors.New("no PostgreSQL server binaries found (initdb not on PATH nor in " +
		debianBinGlob + "); install them (e.g. apt-get install postgresql) " +
		"or name their directory with --pg-bin")
}

// checkBinDir reports whether dir holds the executables Start runs.
func checkBinDir(dir string) error {
	for _, name := range []string{"initdb", "postgres"} {
		p := filepath.Join(dir, name)
		st, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("postgres bin dir %s: %w", dir, err)
		}
		if st.IsDir() || st.Mode().Perm()&0o111 == 0 {
			return fmt.Errorf("postgres bin dir %s: %s is not an executable file", dir, p)
		}
	}
	return nil
}

// versionKey orders Debian version directories numerically, so that 9.6
// sorts below 10 and 15 below 16; unparsable names sort first.
func versionKey(binDir string) float64 {
	v := filepath.Base(filepath.Dir(binDir))
	f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil {
		return -1
	}
	return f
}
