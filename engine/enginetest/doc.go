// Package enginetest runs tpcd's coordinator and participant engines inside a
// deterministic, single-threaded world: a log per node whose events become
// durable only when the world says so, a network that holds every message
// until it is delivered, dropped or duplicated, a simulated data database per
// participant, and a client. Nothing happens on its own; each method of
// [Cluster] performs one action and reports what followed through a trace
// function, which makes the same world usable by hand-written scenarios
// (golden traces) and by a randomized simulation ([Simulate]).
//
// The world honours the caller's duties listed in package engine: effects are
// released only once their WaitLSN is durable, data operations of one
// transaction run in order, a crash loses every event not yet durable, every
// open data transaction and every in-flight operation, and a restarted node is
// rebuilt from its durable events alone before it is given a Start input with
// the prepared GIDs and markers of its data database.
//
// A [Checker] watches every action and records broken invariants: a
// transaction committed on one participant and rolled back on another, a
// participant committing before the coordinator's commit decision is durable,
// a client told "commit" about a transaction that is not committed
// everywhere, committed data that differs from what the client was told,
// or any Violation the engines report.
//
// The package imports only the standard library and engine, like etcd's
// rafttest, so that it stays as easy to trust as the machines it tests.
package enginetest
