package testbin

import (
	"os"
	"path/filepath"
	"testing"
)

// TestBinaryTakesTheOneNamed: with BinaryEnv set, Binary answers that
// file and builds nothing (a build would answer a path of its own).
func TestBinaryTakesTheOneNamed(t *testing.T) {
	built := filepath.Join(t.TempDir(), "tpcd")
	if err := os.WriteFile(built, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv(BinaryEnv, built)
	if got := Binary(t); got != built {
		t.Fatalf("Binary = %q, want the binary %s names, %q", got, BinaryEnv, built)
	}
}
