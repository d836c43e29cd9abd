// Package statuspage renders the coordinator's read-only status page: the
// participants and their health, the transactions in flight and in doubt,
// and the latest outcomes with counts. It is server-rendered with
// html/template, uses no external assets (no scripts at all), and reloads
// itself with a meta refresh. The data comes from a node.CoordinatorSnapshot,
// which the coordinator takes on its loop goroutine every second; a page
// view reads the latest one and never waits for the loop.
package statuspage
