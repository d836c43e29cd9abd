package shard

import (
	"testing"

	"github.com/tpcd/tpcd/engine"
)

func TestNodeForIsFNV1a(t *testing.T) {
	// FNV-1a 32 of "a" is 0xe40c292c (the published test vector).
	if got, want := NodeFor("a", 1000), engine.NodeID(0xe40c292c%1000); got != want {
		t.Fatalf("NodeFor(a) = %d, want %d", got, want)
	}
	if NodeFor("", 3) != engine.NodeID(0x811c9dc5%3) {
		t.Fatal("empty key must hash to the offset basis")
	}
}
