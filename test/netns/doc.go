// Package netns holds an end-to-end test of tpcd on hosts that are really
// apart: every node and every PostgreSQL server runs in a Linux network
// namespace of its own, on a private 10.x network of veth pairs and two
// bridges that exists only inside the test's namespaces, and the test cuts
// links by taking interfaces down while bank transfers run through the
// coordinator. After the links heal, money is conserved, every transfer is
// on both its sides or on neither, every transfer a client was told of is
// there, and nothing is left prepared.
//
// Creating namespaces takes root (CAP_SYS_ADMIN) and the ip command of
// iproute2; where either is missing the test is skipped and says why.
package netns
