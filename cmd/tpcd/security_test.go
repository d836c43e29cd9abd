package main

import (
	"crypto/tls"
	"net"
	"strings"
	"testing"

	"github.com/tpcd/tpcd/node"
	"github.com/tpcd/tpcd/rpc"
)

func TestIsLoopback(t *testing.T) {
	for _, tc := range []struct {
		ip   string
		want bool
	}{
		{"127.0.0.1", true},
		{"127.0.0.2", true}, // all of 127.0.0.0/8 is loopback
		{"::1", true},
		{"0.0.0.0", false}, // every interface
		{"::", false},
		{"10.1.2.3", false},
		{"192.0.2.7", false},
	} {
		addr := &net.TCPAddr{IP: net.ParseIP(tc.ip), Port: 9990}
		if got := isLoopback(addr); got != tc.want {
			t.Errorf("isLoopback(%s) = %v, want %v", addr, got, tc.want)
		}
	}
}

// TestPeerAccess is the rule for node-to-node methods, case by case.
func TestPeerAccess(t *testing.T) {
	const lo, remote = true, false
	for _, tc := range []struct {
		name                string
		loopback            bool
		auth                rpc.Auth
		mutualTLS, insecure bool
		// refused: the node must not start; else peersWithoutToken is
		// what the server gets, and warn a piece of the warning (empty:
		// none).
		refused           string
		peersWithoutToken bool
		warn              string
	}{
		{name: "seed on localhost", loopback: lo},
		{name: "peer token on loopback", loopback: lo, auth: rpc.Auth{PeerToken: "p"}},
		{name: "peer token elsewhere", loopback: remote, auth: rpc.Auth{PeerToken: "p"}},
		{name: "both tokens elsewhere", loopback: remote, auth: rpc.Auth{ClientToken: "c", PeerToken: "p"}},
		{name: "mutual TLS elsewhere, no token", loopback: remote, mutualTLS: true},
		{name: "mutual TLS beside a client token", loopback: remote, auth: rpc.Auth{ClientToken: "c"}, mutualTLS: true, peersWithoutToken: true},
		{name: "nothing elsewhere", loopback: remote, refused: "not a loopback address"},
		{name: "client token alone on loopback", loopback: lo, auth: rpc.Auth{ClientToken: "c"}, refused: "only token is a client token"},
		{name: "client token alone elsewhere", loopback: remote, auth: rpc.Auth{ClientToken: "c"}, refused: "only token is a client token"},
		{name: "nothing elsewhere, insecure", loopback: remote, insecure: true, warn: "--insecure: --host"},
		{name: "client token alone, insecure", loopback: lo, auth: rpc.Auth{ClientToken: "c"}, insecure: true, peersWithoutToken: true, warn: "anyone who can reach"},
		{name: "insecure needlessly", loopback: remote, auth: rpc.Auth{PeerToken: "p"}, insecure: true, warn: "changes nothing"},
		{name: "insecure on loopback", loopback: lo, insecure: true, warn: "changes nothing"},
	} {
		tr := node.Transport{Auth: tc.auth}
		warnings, err := peerAccess("10.1.2.3:9991", tc.loopback, &tr, tc.mutualTLS, tc.insecure)
		if tc.refused != "" {
			if err == nil || !strings.Contains(err.Error(), tc.refused) || !strings.Contains(err.Error(), "--insecure") || !strings.Contains(err.Error(), "--peer-token") {
				t.Errorf("%s: err %v, want a refusal naming %q, --peer-token and --insecure", tc.name, err, tc.refused)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: refused: %v", tc.name, err)
			continue
		}
		if tr.Auth.PeersWithoutToken != tc.peersWithoutToken {
			t.Errorf("%s: PeersWithoutToken %v, want %v", tc.name, tr.Auth.PeersWithoutToken, tc.peersWithoutToken)
		}
		got := strings.Join(warnings, "\n")
		if (tc.warn == "") != (got == "") || !strings.Contains(got, tc.warn) {
			t.Errorf("%s: warnings %q, want %q", tc.name, got, tc.warn)
		}
		if strings.Contains(got, "\"p\"") || strings.Contains(got, "\"c\"") {
			t.Errorf("%s: a warning shows a token: %q", tc.name, got)
		}
	}
}

func TestSecurityWarnings(t *testing.T) {
	open := node.Transport{}
	secured := node.Transport{Auth: rpc.Auth{ClientToken: "sekrit-c", PeerToken: "sekrit-p"}, ServerTLS: &tls.Config{}}
	for _, tc := range []struct {
		addr      string
		loopback  bool
		t         node.Transport
		mutualTLS bool
		want      []string
	}{
		{"127.0.0.1:9990", true, open, false, nil},
		{"0.0.0.0:9990", false, node.Transport{Auth: rpc.Auth{PeerToken: "sekrit-p"}}, false, []string{"no client token", "without TLS"}},
		{"10.1.2.3:9990", false, node.Transport{Auth: rpc.Auth{ClientToken: "sekrit-c", PeerToken: "sekrit-p"}}, false, []string{"without TLS"}},
		{"10.1.2.3:9990", false, node.Transport{ServerTLS: &tls.Config{}}, true, nil},
		{"10.1.2.3:9990", false, secured, false, nil},
	} {
		got := strings.Join(securityWarnings(tc.addr, tc.loopback, tc.t, tc.mutualTLS), "\n")
		if len(tc.want) == 0 && got != "" {
			t.Errorf("%s: unexpected warnings %q", tc.addr, got)
		}
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: warnings %q lack %q", tc.addr, got, w)
			}
		}
		if strings.Contains(got, "sekrit") {
			t.Errorf("warning shows a token: %q", got)
		}
	}
}
