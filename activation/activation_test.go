package activation_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tpcd/tpcd/activation"
	"github.com/tpcd/tpcd/internal/testbin"
)

// childEnv makes the test binary, started again by the tests, serve as a
// node would: on the inherited socket bound to the address it names.
const childEnv = "ACTIVATION_TEST_SERVE"

func TestMain(m *testing.M) {
	if addr := os.Getenv(childEnv); addr != "" {
		os.Exit(serve(addr))
	}
	os.Exit(m.Run())
}

// serve answers one connection on addr with the variables it still sees
// and the addresses of the sockets nobody asked for.
func serve(addr string) int {
	if err := activation.Init(); err != nil {
		fmt.Println("init:", err)
		return 1
	}
	ln, err := activation.Listen("tcp", addr)
	if err != nil {
		fmt.Println("listen:", err)
		return 1
	}
	fmt.Println("serving")
	c, err := ln.Accept()
	if err != nil {
		fmt.Println("accept:", err)
		return 1
	}
	fmt.Fprintf(c, "LISTEN_PID=%q unused=%v\n", os.Getenv("LISTEN_PID"), activation.Unused())
	c.Close()
	return 0
}

// TestServesOnInheritedSocket passes two held ports to a child that asks
// for one of them: it serves on that socket (the port was never free),
// sees the protocol's variables no more, and names the other as unused.
// The port stays the test's after the child exits.
func TestServesOnInheritedSocket(t *testing.T) {
	ports := testbin.HoldPorts(t, 2)
	cmd := testbin.Command(os.Args[0], ports, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+ports[1].Addr)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := bufio.NewReader(out)
	if line, _ := lines.ReadString('\n'); line != "serving\n" {
		t.Fatalf("child: %q", line)
	}
	c, err := net.DialTimeout("tcp", ports[1].Addr, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(time.Minute))
	reply, err := io.ReadAll(c)
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("LISTEN_PID=\"\" unused=[%s]\n", ports[0].Addr); string(reply) != want {
		t.Errorf("child answered %q, want %q", reply, want)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	// The test still holds the port: nobody else could bind it.
	if ln, err := net.Listen("tcp", ports[1].Addr); err == nil {
		ln.Close()
		t.Errorf("%s could be bound again after the child exited", ports[1].Addr)
	} else if !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("bind %s: %v", ports[1].Addr, err)
	}
}

// Without the protocol's variables (or with another process's pid) a
// node listens by itself.
func TestListensWithoutInheritedSockets(t *testing.T) {
	t.Setenv("LISTEN_PID", "1")
	t.Setenv("LISTEN_FDS", "1")
	ln, err := activation.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, ok := os.LookupEnv("LISTEN_FDS"); ok {
		t.Error("LISTEN_FDS is still set: a child would take it for its own")
	}
	if u := activation.Unused(); len(u) != 0 {
		t.Errorf("unused inherited sockets %v, want none", u)
	}
}
