// Package frontdoor tests the PostgreSQL front door through the tpcd
// binary: `tpcd cluster` prints a psql command that works, `tpcd
// coordinator --pg-listen` serves the users of --pg-users-file, and the
// flags refuse what would be unsafe. The protocol itself is tested in
// package pgwire.
package frontdoor
