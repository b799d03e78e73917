package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/net/websocket"
)

// burn keeps one CPU busy for d and returns how many rounds it spun.
func burn(d time.Duration) int {
	n := 0
	for end := time.Now().Add(d); time.Now().Before(end); n++ {
		for i := 0; i < 1000; i++ {
			_ = i * i
		}
	}
	return n
}

// newHandler serves the endpoints (see the package comment). failAfter > 0 makes /healthz
// start failing that long after start, to exercise liveness probes.
func newHandler(name string, start time.Time, failAfter time.Duration) http.Handler {
	var requests atomic.Int64
	mux := http.NewServeMux()
	// "/" is a catch-all on purpose: Ingress tests route prefixes such as
	// /app to this server and expect the greeting, not a 404.
	mux.HandleFunc("GET /", func(w http.ResponseWriter, r *http.Request) {
		n := requests.Add(1)
		fmt.Fprintf(w, "Hello from Kubernetes! I am %s, request %d\n", name, n)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if failAfter > 0 && time.Since(start) >= failAfter {
			http.Error(w, "failing (FAIL_HEALTHZ_AFTER)", http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, "ok")
	})
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, version)
	})
	// /burn?ms=N spins a CPU for N ms (at most 5 s): load for autoscaling.
	mux.HandleFunc("GET /burn", func(w http.ResponseWriter, r *http.Request) {
		ms, err := strconv.Atoi(r.URL.Query().Get("ms"))
		if err != nil || ms < 0 || ms > 5000 {
			http.Error(w, "ms must be 0-5000", http.StatusBadRequest)
			return
		}
		spins := burn(time.Duration(ms) * time.Millisecond)
		fmt.Fprintf(w, "burned %dms (%d spins) on %s\n", ms, spins, name)
	})
	// /api?path=P reads P from the Kubernetes API as the pod (autonomy
	// tests: the node's cache answers pods too).
	mux.HandleFunc("GET /api", apiHandler(saDir))
	// /dns?name=N resolves N with the pod's resolver (cluster DNS).
	mux.HandleFunc("GET /dns", func(w http.ResponseWriter, r *http.Request) {
		addrs, err := net.DefaultResolver.LookupHost(r.Context(), r.URL.Query().Get("name"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		fmt.Fprintln(w, strings.Join(addrs, " "))
	})
	// /tcp?addr=HOST:PORT gets http://HOST:PORT/ on a new connection,
	// giving up after 2 s, and returns the answer: the TCP client of
	// NetworkPolicy tests (busybox's wget -T crashes).
	mux.HandleFunc("GET /tcp", func(w http.ResponseWriter, r *http.Request) {
		client := http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := client.Get("http://" + r.URL.Query().Get("addr") + "/")
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		io.Copy(w, resp.Body)
	})
	// POST /sink reads and drops the body and says how many bytes it
	// read; /blast?addr=HOST:PORT&seconds=N streams to HOST:PORT's /sink
	// for N seconds (at most 60) and says how many bytes in how long: the
	// bench's pod-to-pod throughput.
	mux.HandleFunc("POST /sink", func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintln(w, n)
	})
	mux.HandleFunc("GET /blast", func(w http.ResponseWriter, r *http.Request) {
		secs, err := strconv.Atoi(r.URL.Query().Get("seconds"))
		if err != nil || secs < 1 || secs > 60 {
			http.Error(w, "seconds must be 1-60", http.StatusBadRequest)
			return
		}
		n, took, err := blast(r.URL.Query().Get("addr"), time.Duration(secs)*time.Second)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		fmt.Fprintf(w, "%d bytes in %.3f s\n", n, took.Seconds())
	})
	// /udp?addr=HOST:PORT sends one datagram to HOST:PORT from a new socket
	// (a new connection to conntrack) and returns the answer: the client
	// of UDP NetworkPolicy tests.
	mux.HandleFunc("GET /udp", func(w http.ResponseWriter, r *http.Request) {
		answer, err := udpExchange(r.URL.Query().Get("addr"), "hi", 2*time.Second)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		fmt.Fprintln(w, answer)
	})
	// /ws echoes each WebSocket message, prefixed with the pod's name.
	mux.Handle("GET /ws", websocket.Handler(func(c *websocket.Conn) {
		defer c.Close()
		for {
			var msg string
			if err := websocket.Message.Receive(c, &msg); err != nil {
				return
			}
			if err := websocket.Message.Send(c, name+": "+msg); err != nil {
				return
			}
		}
	}))
	return mux
}

// statusRecorder remembers the status code so it can be logged.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// Hijack lets WebSocket handlers take the connection through the recorder.
func (s *statusRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h, ok := s.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("the connection cannot be hijacked")
	}
	s.status = http.StatusSwitchingProtocols
	return h.Hijack()
}

// logRequests writes one line per request to stdout (kubectl logs).
func logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		start := time.Now()
		next.ServeHTTP(rec, r)
		log.Printf("%s %s %s %d %s", r.RemoteAddr, r.Method, r.URL.Path, rec.status, time.Since(start).Round(time.Microsecond))
	})
}

// blast posts zeros to http://addr/sink for d and returns how many bytes
// the sink read, and how long it took.
func blast(addr string, d time.Duration) (int64, time.Duration, error) {
	pr, pw := io.Pipe()
	go func() {
		buf := make([]byte, 64<<10)
		for end := time.Now().Add(d); time.Now().Before(end); {
			if _, err := pw.Write(buf); err != nil {
				return
			}
		}
		pw.Close()
	}()
	start := time.Now()
	client := http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Post("http://"+addr+"/sink", "application/octet-stream", pr)
	if err != nil {
		pr.CloseWithError(err)
		return 0, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	took := time.Since(start)
	if err != nil {
		return 0, 0, err
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(body)), 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("sink answered %q", body)
	}
	return n, took, nil
}
