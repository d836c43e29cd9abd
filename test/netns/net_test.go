package netns

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// network is a private network of hosts, each a network namespace with one
// veth link to a switch namespace. The switch holds two bridges joined by
// a trunk: hosts on side "b" are a minority the trunk cuts off from the
// rest. The test process itself reaches the network as one more host on
// side "a", through a veth pair whose outer end stays in its own namespace.
type network struct {
	t      *testing.T
	id     string // a few hex digits naming this network's namespaces and links
	prefix string // the /24, as "10.213.N"
	sw     string // the switch namespace
	hosts  map[string]*host
	n      int    // hosts made so far
	client string // the test process's own end of its link
}

// host is one namespace on the network.
type host struct {
	name, ns, addr string
	// link is the host's veth end inside the switch namespace: taking it
	// down cuts the host off.
	link string
}

// ip runs the ip command of iproute2.
func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// newNetwork makes the switch, or skips the test where namespaces cannot
// be made. Everything it makes goes when the test ends.
func newNetwork(t *testing.T) *network {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipped: creating network namespaces takes root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("skipped: no ip command (Debian's iproute2; make test installs it)")
	}
	idb := make([]byte, 2)
	rand.Read(idb)
	third, _ := rand.Int(rand.Reader, big.NewInt(250))
	nw := &network{t: t, id: hex.EncodeToString(idb), prefix: fmt.Sprintf("10.213.%d", third.Int64()+2), hosts: map[string]*host{}}
	nw.sw = "tpcd" + nw.id + "sw"
	if err := ip("netns", "add", nw.sw); err != nil {
		t.Skipf("skipped: network namespaces cannot be created here: %v", err)
	}
	t.Cleanup(func() { ip("netns", "del", nw.sw) })
	nw.must("-n", nw.sw, "link", "set", "lo", "up")
	for _, br := range []string{"bra", "brb"} {
		nw.must("-n", nw.sw, "link", "add", br, "type", "bridge")
		nw.must("-n", nw.sw, "link", "set", br, "up")
	}
	nw.must("-n", nw.sw, "link", "add", "trunka", "type", "veth", "peer", "name", "trunkb")
	nw.must("-n", nw.sw, "link", "set", "trunka", "master", "bra")
	nw.must("-n", nw.sw, "link", "set", "trunkb", "master", "brb")
	nw.must("-n", nw.sw, "link", "set", "trunka", "up")
	nw.must("-n", nw.sw, "link", "set", "trunkb", "up")

	// The test process's own link, on side a, at .1.
	nw.client = "tn" + nw.id + "c"
	inner := "tn" + nw.id + "cs"
	nw.must("link", "add", nw.client, "type", "veth", "peer", "name", inner)
	t.Cleanup(func() { ip("link", "del", nw.client) })
	nw.must("link", "set", inner, "netns", nw.sw)
	nw.must("-n", nw.sw, "link", "set", inner, "master", "bra")
	nw.must("-n", nw.sw, "link", "set", inner, "up")
	nw.must("addr", "add", nw.prefix+".1/24", "dev", nw.client)
	nw.must("link", "set", nw.client, "up")
	return nw
}

func (nw *network) must(args ...string) {
	nw.t.Helper()
	if err := ip(args...); err != nil {
		nw.t.Fatal(err)
	}
}

// cidr is the network's prefix.
func (nw *network) cidr() string { return nw.prefix + ".0/24" }

// add makes host name at address .last on side ("a" or "b").
func (nw *network) add(name string, last int, side string) *host {
	nw.t.Helper()
	nw.n++
	h := &host{name: name, ns: fmt.Sprintf("tpcd%s%s", nw.id, name), addr: fmt.Sprintf("%s.%d", nw.prefix, last)}
	outer := fmt.Sprintf("tn%s%dh", nw.id, nw.n)
	h.link = fmt.Sprintf("tn%s%ds", nw.id, nw.n)
	nw.must("netns", "add", h.ns)
	nw.t.Cleanup(func() { ip("netns", "del", h.ns) })
	nw.must("-n", h.ns, "link", "set", "lo", "up")
	nw.must("link", "add", outer, "type", "veth", "peer", "name", h.link)
	nw.must("link", "set", outer, "netns", h.ns)
	nw.must("link", "set", h.link, "netns", nw.sw)
	nw.must("-n", h.ns, "addr", "add", h.addr+"/24", "dev", outer)
	nw.must("-n", h.ns, "link", "set", outer, "up")
	nw.must("-n", nw.sw, "link", "set", h.link, "master", "br"+side)
	nw.must("-n", nw.sw, "link", "set", h.link, "up")
	nw.hosts[name] = h
	return h
}

// cut takes the named links down (a host's name, or "trunk" for the link
// between the two sides); heal brings them up again.
func (nw *network) cut(names ...string)  { nw.setLinks("down", names) }
func (nw *network) heal(names ...string) { nw.setLinks("up", names) }

func (nw *network) setLinks(state string, names []string) {
	nw.t.Helper()
	for _, name := range names {
		if name == "trunk" {
			nw.must("-n", nw.sw, "link", "set", "trunka", state)
			continue
		}
		nw.must("-n", nw.sw, "link", "set", nw.hosts[name].link, state)
	}
	nw.t.Logf("links %s: %s", state, strings.Join(names, ", "))
}

// command runs bin with args in h's namespace; `ip netns exec` execs it in
// place, so the process is bin itself.
func (h *host) command(bin string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", h.ns, bin}, args...)...)
}
