// Package memlog is an event log held in memory, for tests of code that
// writes a log, package node's loop first of all. It keeps the contract of
// logstore.Store (one row per append, seqs increasing across the whole log
// in append order, a failed append writes nothing, Compact spares rows with
// node-level events or violations) and adds what a database cannot
// offer a test: the test decides when each append completes and whether it
// fails.
//
// By default an append is written at once. After Hold, every append waits
// as a HeldAppend on the Held channel until the test releases or fails it,
// which is how a test stands between "handed to the log" and "durable".
//
// It is not a production log: nothing survives the process.
package memlog
