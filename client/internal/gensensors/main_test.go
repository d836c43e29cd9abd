package main

import (
	"bytes"
	"os"
	"testing"
)

// The committed data set must be what the generator makes: regenerate it
// with go generate ./client after changing the generator.
func TestCommittedFileIsGenerated(t *testing.T) {
	want, err := os.ReadFile("../../../testdata/sensors.csv")
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	if err := Generate(&got, DefaultRows, DefaultSeed); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("testdata/sensors.csv differs from the generator's output (%d vs %d bytes); run go generate ./client", len(want), got.Len())
	}
	lines := bytes.Count(want, []byte("\n"))
	if lines != DefaultRows+1 {
		t.Fatalf("%d lines, want a header and %d rows", lines, DefaultRows)
	}
}
