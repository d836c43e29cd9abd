package main

import (
	"crypto/tls"
	"strings"
	"testing"

	"github.com/tpcd/tpcd/node"
	"github.com/tpcd/tpcd/rpc"
)

func TestSecurityWarnings(t *testing.T) {
	open := node.Transport{}
	secured := node.Transport{Auth: rpc.Auth{ClientToken: "sekrit-c", PeerToken: "sekrit-p"}, ServerTLS: &tls.Config{}}
	for _, tc := range []struct {
		addr string
		t    node.Transport
		want []string
	}{
		{"127.0.0.1:9990", open, nil},
		{"localhost:9990", open, nil},
		{"[::1]:9990", open, nil},
		{"0.0.0.0:9990", open, []string{"without any token", "without TLS"}},
		{"10.1.2.3:9990", node.Transport{Auth: rpc.Auth{ClientToken: "sekrit-c"}}, []string{"without TLS"}},
		{"db1.example:9990", secured, nil},
		{":9990", open, []string{"without any token", "without TLS"}},
	} {
		got := strings.Join(securityWarnings(tc.addr, tc.t), "\n")
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
