// Package run holds end-to-end tests of `tpcd cluster`, which `make run`
// starts: it runs the real binary, reads the addresses it prints, uses them
// as printed, stops it with the signals a terminal or a service manager
// sends, and checks its exit status and what it leaves in TMPDIR.
package run
