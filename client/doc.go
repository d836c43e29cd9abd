// Package client is the logic behind `tpcd client`: the command language
// (begin, exec, commit, ... and the seed-style execute), a session that talks
// to a coordinator over JSON-RPC and survives its restarts, rendering of
// results as aligned tables, JSON lines or CSV, an interactive shell with
// line editing, history and completion, scripted runs, and a CSV loader that
// routes rows to participants by a stable hash of a key column.
//
// The command language and the loader are documented in docs/CLIENT.md.
package client

//go:generate go run ./internal/gensensors -o ../testdata/sensors.csv
