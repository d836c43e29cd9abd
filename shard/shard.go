// Package shard routes a row to a participant by its key: the one hash that
// `tpcd client load` and the PostgreSQL front door share, so that rows
// loaded either way line up.
package shard

import (
	"hash/fnv"

	"github.com/tpcd/tpcd/engine"
)

// NodeFor routes a row to a participant: FNV-1a (32 bit) of the key's text,
// modulo the number of participants. The key is hashed exactly as it appears
// in the input, so "7" and "07" land on different nodes; the hash never
// changes between releases, so a table loaded twice splits the same way.
func NodeFor(key string, participants int) engine.NodeID {
	if participants <= 0 {
		panic("shard: NodeFor needs at least one participant")
	}
	h := fnv.New32a()
	h.Write([]byte(key))
	return engine.NodeID(h.Sum32() % uint32(participants))
}
