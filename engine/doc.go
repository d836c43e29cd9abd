// Package engine holds tpcd's two-phase-commit state machines: the
// coordinator and the participant. It is pure and deterministic: no I/O, no
// clock, no randomness and no goroutines. Time enters as an [Instant] carried
// by every input, and everything the machines want done leaves as a [Ready]:
// events to append to the durable log and effects to perform once the events
// they depend on are durable.
//
// The protocol is two-phase commit with presumed abort (Mohan, Lindsay and
// Obermarck, "Transaction Management in the R* Distributed Database
// Management System", 1986; Gray and Reuter, "Transaction Processing", 1993,
// ch. 10). Only the coordinator's commit decision and a participant's
// Prepared record must be durable before the messages that reveal them; every
// other event may be appended lazily because recovery can re-derive it.
//
// # The caller's duties
//
// A driver (package node) runs one machine like this:
//
//  1. On start, fold the node's durable events into the machine with Apply, in
//     log order, then call Step with a Start input. Persist that Ready's events
//     before serving anything.
//  2. For every input (client call, message, data-DB result, tick), call Step.
//  3. Append Ready.Events to the log in order; event i of a Ready has log
//     position Ready.FirstLSN+i within this incarnation.
//  4. Perform each effect only once every event up to its WaitLSN is durable.
//     Effects with WaitLSN 0 may run at once. Data-DB effects of one
//     transaction must run in the order they were emitted.
//  5. Feed results of data-DB effects back as DataDone inputs, and failed sends
//     as SendFailed inputs. Call Step with a Tick regularly (every few tens of
//     milliseconds); timeouts and retries are driven from there.
package engine
