// Package sdnotify tells a service manager about kedge's state through the
// sd_notify protocol (systemd's Type=notify): one datagram per state change
// to the unix socket named by $NOTIFY_SOCKET. Without that variable (not
// started by systemd) every call does nothing.
package sdnotify

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
)

// Messages kedge sends (see sd_notify(3)).
const (
	Ready    = "READY=1"
	Stopping = "STOPPING=1"
)

// socket is $NOTIFY_SOCKET, taken out of the environment as the program
// starts, before any component runs: the upstream components kedge embeds
// notify on their own (kube-apiserver sends READY=1 once its post-start
// hooks run, the kubelet as it starts, and a child containerd would
// inherit the variable), which would tell systemd that kedge is ready
// long before it is. Only kedge's own ReadyUntil may notify.
var socket = take()

func take() string {
	s := os.Getenv("NOTIFY_SOCKET")
	os.Unsetenv("NOTIFY_SOCKET")
	return s
}

// ReadyUntil tells the service manager that kedge is ready, and that it is
// stopping once ctx is done (its graceful shutdown begins). A failure is
// logged: systemd then times the start out, which says more than kedge can.
func ReadyUntil(ctx context.Context, log *slog.Logger) {
	if _, err := Send(Ready); err != nil {
		log.Warn("cannot notify the service manager", "err", err)
		return
	}
	context.AfterFunc(ctx, func() { _, _ = Send(Stopping) })
}

// Send sends state to the socket that was $NOTIFY_SOCKET when kedge
// started. It reports whether a message was sent; an error means there is
// a socket but it could not be written.
func Send(state string) (bool, error) {
	return send(socket, state)
}

func send(socket, state string) (bool, error) {
	if socket == "" {
		return false, nil
	}
	// A name starting with "@" is in the abstract namespace; the net
	// package translates it.
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: socket, Net: "unixgram"})
	if err != nil {
		return false, fmt.Errorf("notify %s: %w", socket, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return false, fmt.Errorf("notify %s: %w", socket, err)
	}
	return true, nil
}
