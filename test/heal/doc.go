// Package heal holds end-to-end tests, on real tpcd processes, of nodes
// whose own (embedded) PostgreSQL dies: the node restarts it and serves
// again without help, exits non-zero when it cannot, starts on the first
// try right after its server was killed, and refuses a data server that
// cannot prepare transactions; and of a coordinator whose log server fails
// over to its synchronous standby under load.
package heal
