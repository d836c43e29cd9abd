package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// selfCommand is how a user in this process's working directory runs this
// same binary, for hints such as the connect command `tpcd cluster`
// prints: `tpcd` when that is what PATH finds, a relative path below the
// working directory (bin/tpcd after make build), else the absolute path.
// A binary `go run` built is removed when it exits, so `go run` is named
// instead.
func selfCommand() string {
	exe, err := os.Executable()
	if err != nil {
		return "tpcd"
	}
	if real, err := filepath.EvalSymlinks(exe); err == nil {
		exe = real
	}
	if onPath, err := exec.LookPath("tpcd"); err == nil {
		if real, err := filepath.EvalSymlinks(onPath); err == nil && real == exe {
			return "tpcd"
		}
	}
	if strings.Contains(exe, string(filepath.Separator)+"go-build") {
		return "go run github.com/tpcd/tpcd/cmd/tpcd"
	}
	if wd, err := os.Getwd(); err == nil {
		if real, err := filepath.EvalSymlinks(wd); err == nil {
			wd = real
		}
		if rel, err := filepath.Rel(wd, exe); err == nil && filepath.IsLocal(rel) {
			if !strings.Contains(rel, string(filepath.Separator)) {
				rel = "." + string(filepath.Separator) + rel
			}
			return shellQuote(rel)
		}
	}
	return shellQuote(exe)
}

// shellQuote quotes s for a POSIX shell when it needs quoting.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./+:@%,=") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
