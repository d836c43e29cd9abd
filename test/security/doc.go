// Package security runs the tpcd binary as real processes to show its
// security and observability end to end: tokens, TLS and mutual TLS
// between coordinator and participants, metrics and the status page over
// HTTP, and secrets kept out of logs, errors and --help.
package security
