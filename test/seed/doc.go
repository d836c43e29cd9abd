// Package seed holds end-to-end tests that run the tpcd binary as real
// processes with the seed project's command lines, and check the CLI's
// answers to bad input.
package seed
