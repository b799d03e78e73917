package main

import (
	"fmt"
	"log"
	"net/http"
	"sync/atomic"
	"time"
)

// newHandler serves the three endpoints. failAfter > 0 makes /healthz
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

// logRequests writes one line per request to stdout (kubectl logs).
func logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		start := time.Now()
		next.ServeHTTP(rec, r)
		log.Printf("%s %s %s %d %s", r.RemoteAddr, r.Method, r.URL.Path, rec.status, time.Since(start).Round(time.Microsecond))
	})
}
