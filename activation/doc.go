// Package activation gives a node the listening sockets the process that
// started it passed down, by systemd's socket-activation protocol
// (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES; sd_listen_fds(3)): a service
// manager, a test or the chaos harness binds the port and hands the socket
// over, so that the port never stands free between the bind and the node's
// start, nor while the node restarts: connections made meanwhile wait in
// the socket's queue for the next process instead of being refused, and no
// other program can take the port.
//
// A node asks for the address it was told to serve on (--host,
// --metrics-addr); an inherited socket bound to that address is used, and
// without one the node listens itself. Sockets are matched by address, so
// LISTEN_FDNAMES is not needed.
package activation
