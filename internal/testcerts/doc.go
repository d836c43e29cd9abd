// Package testcerts makes throw-away certificate authorities and
// certificates for tests of tpcd's TLS: ECDSA keys, certificates valid for
// 127.0.0.1 as servers and as clients, written as PEM files.
package testcerts
