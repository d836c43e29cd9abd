//go:build race

package client

// raceEnabled tells the tests to build the tpcd binary with the race
// detector too: it then shares the test's compiled packages, and races in
// the interactive shell show up in the pty test.
const raceEnabled = true
