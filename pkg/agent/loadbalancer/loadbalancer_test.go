package loadbalancer

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// echoServer answers each line with name.
func echoServer(t *testing.T, name string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					if _, err := r.ReadString('\n'); err != nil {
						return
					}
					io.WriteString(c, name+"\n")
				}
			}()
		}
	}()
	return ln
}

func ask(t *testing.T, addr string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return ""
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	io.WriteString(c, "hi\n")
	line, _ := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line)
}

func TestFailoverAndState(t *testing.T) {
	a, b := echoServer(t, "a"), echoServer(t, "b")
	defer b.Close()
	state := filepath.Join(t.TempDir(), "etc", "servers.json")
	lb, err := New(0, a.Addr().String(), state, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := lb.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer lb.Stop()
	addr := strings.TrimPrefix(lb.URL(), "https://")
	if got := ask(t, addr); got != "a" {
		t.Fatalf("first answer from %q, want a", got)
	}
	lb.SetServers([]string{b.Addr().String()})
	// The current server stays while it answers.
	if got := ask(t, addr); got != "a" {
		t.Fatalf("after learning b: %q", got)
	}
	a.Close()
	if got := ask(t, addr); got != "b" {
		t.Fatalf("with a gone: %q, want b", got)
	}
	// A new LB starts from the kept list (and the default).
	lb2, err := New(0, a.Addr().String(), state, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer lb2.Stop()
	if got := lb2.Servers(); len(got) != 2 {
		t.Fatalf("servers from the state file: %v", got)
	}
}
