package embedpg

import (
	"strings"
	"testing"
)

// A server listening beyond loopback trusts whoever reaches it, so only a
// private network will do.
func TestPrivateNetworkMustBePrivate(t *testing.T) {
	for _, tc := range []struct {
		addr, network, wantErr string
	}{
		{"", "", ""},
		{"10.213.4.31", "10.213.4.0/24", ""},
		{"192.168.7.2", "192.168.7.0/24", ""},
		{"8.8.8.8", "8.8.8.0/24", "must be private"},
		{"10.213.4.31", "10.213.5.0/24", "inside the network"},
		{"10.213.4.31", "", "private network"},
		{"", "10.213.4.0/24", "private address"},
		{"10.213.4.31", "0.0.0.0/0", "must be private"},
	} {
		_, network, err := Options{PrivateAddress: tc.addr, PrivateNetwork: tc.network}.privateNet()
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%q in %q: %v", tc.addr, tc.network, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%q in %q: error %v, want one saying %q", tc.addr, tc.network, err, tc.wantErr)
		case tc.wantErr == "" && tc.network != "" && network.String() != tc.network:
			t.Errorf("%q in %q: network %s", tc.addr, tc.network, network)
		}
	}
	if got := serverArgs("/d", Options{PrivateAddress: "10.213.4.31"}); !strings.Contains(strings.Join(got, " "), "listen_addresses=127.0.0.1,10.213.4.31") {
		t.Errorf("server arguments %q do not listen on the private address", got)
	}
}
