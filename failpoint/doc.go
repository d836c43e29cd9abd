// Package failpoint kills a tpcd process at a named protocol step, the way a
// power cut or SIGKILL would, so that tests can prove recovery from every
// step of two-phase commit on real processes.
//
// Failpoints are inert unless the environment variable TPCD_FAILPOINTS names
// them when the process starts:
//
//	TPCD_FAILPOINTS="coordinator/after-decision-logged"      first hit
//	TPCD_FAILPOINTS="participant/before-ack=3"                third hit
//	TPCD_FAILPOINTS="participant/after-prepare=2,participant/after-vote"
//
// The variable is read once, when the package initialises. A disabled Hit
// costs one atomic load, so the hooks stay in production builds. An armed
// failpoint writes one line to stderr and sends SIGKILL to its own process:
// no deferred function, no flush, no clean-up runs, exactly like a crash.
// A malformed variable or an unknown name makes the process exit with status
// 2 at start rather than run a crash test that can never crash.
//
// The hooks sit in package node; docs/FAILPOINTS.md describes where each one
// fires and what recovery must do afterwards.
package failpoint
