// Command hello is the tiny HTTP server packed into the kedge.test/hello
// test image (also packed as simple-server:v1 and, on port 5000, as
// flask-hello:latest, so that tutorial manifests run unchanged on an
// offline cluster).
//
// GET / answers "Hello from Kubernetes! I am <name>, request <n>", which
// lets tests see which pod served a request and how many that pod has
// served; /healthz and /version serve probes and rolling-update tests;
// /burn?ms=N uses a CPU for N ms (autoscaling tests), /ws echoes
// WebSocket messages (Ingress tests), /api?path=P reads P from the
// Kubernetes API with the pod's service-account token and /dns?name=N
// resolves N (autonomy tests), /tcp?addr=HOST:PORT and /udp?addr=HOST:PORT
// make one new connection to HOST:PORT and return the answer
// (NetworkPolicy tests). The same
// port answers UDP datagrams; --udp-probe HOST:PORT makes it the client of
// UDP tests instead.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

// version is set at build time (-ldflags "-X main.version=v2") so one
// source yields the v1 and v2 images used by rolling-update tests.
var version = "v1"

// shutdownTimeout bounds graceful shutdown; it stays well under the
// default 30s termination grace period so the kubelet never has to SIGKILL.
const shutdownTimeout = 10 * time.Second

func main() {
	host := flag.String("host", "", "address to listen on (default: all interfaces)")
	port := flag.Int("port", 8080, "port to listen on, TCP and UDP (env PORT takes precedence)")
	probe := flag.String("udp-probe", "", "instead of serving, send a UDP datagram to HOST:PORT every second and log the answers")
	flag.Parse()

	if *probe != "" {
		log.SetOutput(os.Stdout)
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		defer stop()
		if err := probeUDP(ctx, *probe, time.Second); err != nil {
			log.Fatalf("hello: %v", err)
		}
		return
	}
	if err := run(*host, *port); err != nil {
		log.Fatalf("hello: %v", err)
	}
}

func run(host string, flagPort int) error {
	log.SetOutput(os.Stdout)

	port, err := listenPort(flagPort)
	if err != nil {
		return err
	}
	name, err := podName()
	if err != nil {
		return err
	}
	failAfter, err := healthzFailAfter()
	if err != nil {
		return err
	}

	srv := &http.Server{
		Addr:              net.JoinHostPort(host, strconv.Itoa(port)),
		Handler:           logRequests(newHandler(name, time.Now(), failAfter)),
		ReadHeaderTimeout: 10 * time.Second,
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	errc := make(chan error, 2)
	go func() {
		log.Printf("hello %s: %s listening on %s", version, name, srv.Addr)
		errc <- srv.ListenAndServe()
	}()
	go func() {
		if err := serveUDP(ctx, srv.Addr, name); err != nil {
			errc <- fmt.Errorf("udp: %w", err)
		}
	}()

	select {
	case err := <-errc:
		return fmt.Errorf("serving on %s: %w", srv.Addr, err)
	case <-ctx.Done():
	}

	log.Printf("hello: signal received, shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutting down: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving on %s: %w", srv.Addr, err)
	}
	return nil
}

// listenPort prefers env PORT so a manifest can move the server (e.g. to
// 5000 for the flask-hello tutorial) without overriding the command.
func listenPort(flagPort int) (int, error) {
	s := os.Getenv("PORT")
	if s == "" {
		return flagPort, nil
	}
	p, err := strconv.Atoi(s)
	if err != nil || p < 1 || p > 65535 {
		return 0, fmt.Errorf("invalid PORT %q: want 1-65535", s)
	}
	return p, nil
}

// podName prefers POD_NAME (downward API) and falls back to the hostname,
// which in a pod is the pod's name.
func podName() (string, error) {
	if n := os.Getenv("POD_NAME"); n != "" {
		return n, nil
	}
	n, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("reading hostname: %w", err)
	}
	return n, nil
}

// healthzFailAfter reads FAIL_HEALTHZ_AFTER (seconds); zero means never fail.
func healthzFailAfter() (time.Duration, error) {
	s := os.Getenv("FAIL_HEALTHZ_AFTER")
	if s == "" {
		return 0, nil
	}
	secs, err := strconv.ParseFloat(s, 64)
	if err != nil || secs < 0 {
		return 0, fmt.Errorf("invalid FAIL_HEALTHZ_AFTER %q: want seconds >= 0", s)
	}
	return time.Duration(secs * float64(time.Second)), nil
}
