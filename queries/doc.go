// Package queries is the sqlc-generated access layer of the event log: the SQL lives
// in log.sql, the schema in db/migrations, and everything else here is generated
// by `make generate` (sqlc, pgx/v5) and must not be edited by hand.
//
// Every method takes its DBTX as an argument, so the same call runs on a pool, a
// connection or inside a transaction. Code outside logstore should not need this
// package; logstore turns its rows into domain records.
//
// The data database's queries are generated the same way into queries/dataqueries.
package queries
