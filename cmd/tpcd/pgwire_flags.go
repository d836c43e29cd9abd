package main

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/tpcd/tpcd/activation"
	"log/slog"
	"net"
	"os"
	"strings"

	"github.com/tpcd/tpcd/pgwire"
)

// PGWireFlags configure the PostgreSQL front door: who may log in, and
// how statements on sharded tables are routed.
type PGWireFlags struct {
	PGUser      []string `name:"pg-user" help:"A PostgreSQL user of the front door, NAME:PASSWORD (SCRAM-SHA-256); repeatable. Prefer --pg-users-file or TPCD_PG_USER: a flag shows in the process list." placeholder:"NAME:PASSWORD" sep:"none"`
	PGUsersFile string   `name:"pg-users-file" help:"Read front-door users from this file, one NAME:PASSWORD a line ('#' starts a comment)." placeholder:"FILE" type:"path"`
	PGTrust     bool     `name:"pg-trust" help:"Let every client of the front door in without a password; only allowed on a loopback address."`
	Shard       []string `help:"Route statements on TABLE by the hash of COLUMN's value (the hash 'tpcd client load' splits rows with); repeatable." placeholder:"TABLE:COLUMN" sep:"none"`
	ShardFile   string   `name:"shard-file" help:"Read more --shard TABLE:COLUMN from this file, one a line ('#' starts a comment)." placeholder:"FILE" type:"path"`
}

// validate checks the flags without reading any file. --pg-trust on an
// address that is plainly not loopback is refused here, before any
// PostgreSQL starts; a host name is checked once bound (startPGWire), as
// for --host.
func (f *PGWireFlags) validate(listen string) error {
	if f.PGTrust && listen != "" {
		if host, _, err := net.SplitHostPort(listen); err == nil {
			if ip := net.ParseIP(host); ip != nil && !ip.IsLoopback() || host == "" {
				return fmt.Errorf("--pg-trust lets anyone in without a password, so it is allowed only on a loopback address, not %s", listen)
			}
		}
	}
	for _, u := range f.PGUser {
		if name, pw, ok := strings.Cut(u, ":"); !ok || name == "" || pw == "" {
			return errors.New("--pg-user wants NAME:PASSWORD, both not empty")
		}
	}
	for _, s := range f.Shard {
		if t, c, ok := strings.Cut(s, ":"); !ok || t == "" || c == "" || strings.Contains(c, ":") {
			return fmt.Errorf("--shard %q: want TABLE:COLUMN", s)
		}
	}
	return nil
}

// users returns the configured users by name.
func (f *PGWireFlags) users() (map[string]string, error) {
	users := map[string]string{}
	for _, u := range f.PGUser {
		name, pw, _ := strings.Cut(u, ":")
		users[name] = pw
	}
	err := readPairs("--pg-users-file", f.PGUsersFile, "NAME:PASSWORD", false, users)
	return users, err
}

// shards returns the shard key column of every sharded table, from
// --shard and --shard-file.
func (f *PGWireFlags) shards() (map[string]string, error) {
	m := map[string]string{}
	for _, s := range f.Shard {
		t, c, _ := strings.Cut(s, ":")
		m[t] = c
	}
	if err := readPairs("--shard-file", f.ShardFile, "TABLE:COLUMN", true, m); err != nil {
		return nil, err
	}
	return m, nil
}

// readPairs adds to m the A:B lines of file (none if file is empty),
// skipping blank lines and # comments. trim trims the space around each
// half and refuses a second colon, as names allow neither; a password
// keeps what it holds.
func readPairs(flag, file, want string, trim bool, m map[string]string) error {
	if file == "" {
		return nil
	}
	fh, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("%s: %w", flag, err)
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		a, b, ok := strings.Cut(text, ":")
		if trim {
			a, b = strings.TrimSpace(a), strings.TrimSpace(b)
			ok = ok && !strings.Contains(b, ":")
		}
		if !ok || a == "" || b == "" {
			return fmt.Errorf("%s %s line %d: want %s", flag, file, line, want)
		}
		m[a] = b
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s %s: %w", flag, file, err)
	}
	return nil
}

// tokenUser is the front door's user when the coordinator has a client
// token and no users were configured: its password is the token, so
// that whoever may call the coordinator's client methods may use psql too.
const tokenUser = "tpcd"

// configured reports whether users or trust were configured.
func (f *PGWireFlags) configured() bool {
	return len(f.PGUser) > 0 || f.PGUsersFile != "" || f.PGTrust
}

// startPGWire listens on addr and serves the front door in the background;
// the caller closes the server.
func startPGWire(addr string, opts pgwire.Options, logger *slog.Logger) (*pgwire.Server, net.Addr, error) {
	srv, err := pgwire.NewServer(opts)
	if err != nil {
		return nil, nil, err
	}
	// A socket passed by the starting process (tests hold their ports so)
	// serves if it is bound to addr.
	ln, err := activation.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("listen on --pg-listen %s: %w", addr, err)
	}
	if opts.Trust && !isLoopback(ln.Addr()) {
		ln.Close()
		return nil, nil, fmt.Errorf("--pg-trust lets anyone in without a password, so it is allowed only on a loopback address, not %s (--pg-listen %s)", ln.Addr(), addr)
	}
	go func() {
		if err := srv.Serve(ln); err != nil {
			logger.Error("PostgreSQL front door stopped", "err", err)
		}
	}()
	return srv, ln.Addr(), nil
}

// pgTLS is the front door's TLS: the node's certificate. A client
// certificate is checked if presented but not required, even where the
// JSON-RPC port requires one: PostgreSQL clients log in with a password.
func pgTLS(rpcTLS *tls.Config) *tls.Config {
	if rpcTLS == nil {
		return nil
	}
	c := rpcTLS.Clone()
	c.NextProtos = []string{"postgresql"}
	if c.ClientAuth == tls.RequireAndVerifyClientCert {
		c.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return c
}
