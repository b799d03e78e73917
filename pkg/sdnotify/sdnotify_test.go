package sdnotify

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func listen(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// setSocket stands for $NOTIFY_SOCKET at the program's start.
func setSocket(t *testing.T, s string) {
	old := socket
	socket = s
	t.Cleanup(func() { socket = old })
}

func receive(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 256)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

func TestSend(t *testing.T) {
	for _, tc := range []struct{ name, socket string }{
		{"path", filepath.Join(t.TempDir(), "notify.sock")},
		{"abstract", "@kedge-sdnotify-test-" + time.Now().Format("150405.000000000")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := listen(t, tc.socket)
			setSocket(t, tc.socket)
			for _, state := range []string{Ready, Stopping} {
				sent, err := Send(state)
				if err != nil || !sent {
					t.Fatalf("Send(%q) = %v, %v; want true, nil", state, sent, err)
				}
				if got := receive(t, conn); got != state {
					t.Errorf("received %q, want %q", got, state)
				}
			}
		})
	}
}

func TestSendWithoutSocket(t *testing.T) {
	setSocket(t, "")
	if sent, err := Send(Ready); sent || err != nil {
		t.Errorf("Send without NOTIFY_SOCKET = %v, %v; want false, nil", sent, err)
	}
}

func TestSendToMissingSocket(t *testing.T) {
	setSocket(t, filepath.Join(t.TempDir(), "absent.sock"))
	if sent, err := Send(Ready); sent || err == nil {
		t.Errorf("Send to a missing socket = %v, %v; want false and an error", sent, err)
	}
}

func TestReadyUntil(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "notify.sock")
	conn := listen(t, socket)
	setSocket(t, socket)
	ctx, cancel := context.WithCancel(context.Background())
	ReadyUntil(ctx, slog.New(slog.DiscardHandler))
	if got := receive(t, conn); got != Ready {
		t.Fatalf("received %q, want %q", got, Ready)
	}
	cancel()
	if got := receive(t, conn); got != Stopping {
		t.Fatalf("after the context ends, received %q, want %q", got, Stopping)
	}
}

// The variable is gone from the environment, so that nothing else in the
// process, or started by it, notifies.
func TestTake(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "/run/systemd/notify")
	if got := take(); got != "/run/systemd/notify" {
		t.Errorf("take() = %q", got)
	}
	if v, ok := os.LookupEnv("NOTIFY_SOCKET"); ok {
		t.Errorf("NOTIFY_SOCKET is still set to %q", v)
	}
}
