// Package frontend serves kedge's own endpoints on the API port. Rather than
// proxying to a second apiserver port, kedge hooks its handler in front of
// the in-process apiserver's handler chain: one TLS listener, one URL, and
// the apiserver itself authenticates everything that is not kedge's.
package frontend

import (
	"net/http"
	"os"
	"strings"
	"time"
)

// Limits of the unauthenticated paths: a request must arrive whole within
// readTimeout, and at most maxInFlight join and static requests are served
// at once (the rest get 429), so slow or many clients cannot tie the
// server up. /ping and /cacerts read no body and answer at once: they stay
// outside the count, so health checks and joins still get through.
const (
	readTimeout = 10 * time.Second
	maxInFlight = 32
)

// Options are what the endpoints serve.
type Options struct {
	// ServerCAFile is returned by /cacerts so a joining agent can verify it
	// against the CA hash in its token.
	ServerCAFile string
	// Join serves /v1-kedge/ (join.Signer); nil answers 404 there.
	Join http.Handler
	// StaticDir is served read-only at /static/ (Helm charts for HelmChart
	// objects and air-gapped sites, as k3s serves them); empty: 404.
	StaticDir string
}

// Wrap returns a handler serving kedge's unauthenticated paths and passing
// everything else to api.
func Wrap(o Options) func(api http.Handler) http.Handler {
	inFlight := make(chan struct{}, maxInFlight)
	return func(api http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if kedgePath(r.URL.Path) && r.URL.Path != "/ping" && r.URL.Path != "/cacerts" {
				select {
				case inFlight <- struct{}{}:
					defer func() { <-inFlight }()
				default:
					w.Header().Set("Retry-After", "1")
					http.Error(w, "too many requests", http.StatusTooManyRequests)
					return
				}
				_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(readTimeout))
			}
			switch {
			case r.URL.Path == "/ping":
				w.Header().Set("Content-Type", "text/plain")
				_, _ = w.Write([]byte("pong"))
			case r.URL.Path == "/cacerts":
				ca, err := os.ReadFile(o.ServerCAFile)
				if err != nil {
					http.Error(w, "server CA unavailable", http.StatusInternalServerError)
					return
				}
				w.Header().Set("Content-Type", "application/x-pem-file")
				_, _ = w.Write(ca)
			case strings.HasPrefix(r.URL.Path, "/static/"):
				serveStatic(w, r, o.StaticDir)
			case strings.HasPrefix(r.URL.Path, "/v1-kedge/"):
				if o.Join == nil {
					http.NotFound(w, r)
					return
				}
				o.Join.ServeHTTP(w, r)
			default:
				api.ServeHTTP(w, r)
			}
		})
	}
}

func kedgePath(p string) bool {
	return p == "/ping" || p == "/cacerts" || strings.HasPrefix(p, "/static/") || strings.HasPrefix(p, "/v1-kedge/")
}

// serveStatic serves one regular file under dir: no listings, nothing
// outside it (http.Dir cleans the path), GET and HEAD only.
func serveStatic(w http.ResponseWriter, r *http.Request, dir string) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "use GET", http.StatusMethodNotAllowed)
		return
	}
	name := strings.TrimPrefix(r.URL.Path, "/static")
	if dir == "" || name == "/" || strings.HasSuffix(name, "/") {
		http.NotFound(w, r)
		return
	}
	f, err := http.Dir(dir).Open(name)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		http.NotFound(w, r)
		return
	}
	http.ServeContent(w, r, fi.Name(), fi.ModTime(), f)
}
