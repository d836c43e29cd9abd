// Package embedpg starts and stops a private PostgreSQL cluster living in one
// directory, so that tpcd nodes and tests can run against a real server
// without any external setup.
//
// A cluster is created with initdb the first time a directory is used and
// reused (which means crash recovery after a kill) on later starts. The
// server listens on 127.0.0.1 only, keeps its unix socket and its log file
// inside the data directory, trusts local connections, has a superuser
// named postgres and enables prepared transactions, which two-phase commit
// needs.
//
// A temporary cluster's directory holds a lock its process keeps until it
// dies; a directory whose lock is free belongs to a dead run (killed, or
// its terminal closed before it could clean up) and the next start of a
// temporary cluster removes it.
//
// PostgreSQL refuses to run as root, so when the calling process is root the
// binaries run as the operating-system user postgres and the data directory
// is handed over to that user.
//
// The postmaster is a direct child of the calling process, placed in its own
// process group (so a terminal's Ctrl-C does not shut it down before its
// owner is done with it) and asked to quit if that owner dies, so that a
// crashed owner does not leave a server behind.
//
// A start first clears what an earlier server of the directory may have
// left: it waits for a postmaster still exiting, kills backends that
// outlived theirs, and removes lock files naming a pid that is no server
// (see clearPrevious), which PostgreSQL alone mistakes for a running one.
//
// Supervise restarts a server that dies on its own, on the same port, and
// gives up on one that keeps dying or cannot be restarted.
package embedpg
