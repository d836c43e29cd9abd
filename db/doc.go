// Package db holds tpcd's schema: the goose migrations of the event log (shared by
// every node of a cluster) and of the small marker table a participant keeps in its
// data database, both embedded in the binary and applied at startup.
//
// Each set records its progress in its own version table, so the two sets can share
// one database and never touch the user's tables, and each takes a PostgreSQL
// advisory lock while migrating, so several nodes starting against the same server
// at once apply every migration exactly once.
//
// Redact hides the password of a connection string, for every package that
// names a database in a log line or an error.
package db
