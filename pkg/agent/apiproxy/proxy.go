// Package apiproxy is an autonomous agent's way to the API (kedge agent
// --autonomy): an HTTPS proxy on loopback between the node's components
// and the agent's load balancer, which keeps the last good answers the
// node needs on its disk and serves them when no server answers.
//
// Each component connects with its own client certificate; the proxy
// forwards its requests under that same identity (it holds the node's
// certificates, as it issued their kubeconfigs). Reads (get, list and
// watch) are forced to JSON so that the lists and the watch events that
// follow them can be kept current: the node's Node, its pods, their
// ConfigMaps and Secrets, Services, EndpointSlices, and the service
// account tokens of its pods. With no server, lists and gets come from
// that cache with a Warning header naming its age, watches stay open
// until a server answers again, and writes fail with 503, so components
// retry them against the server once it is back. Nothing is invented: an
// answer the node never got is a 503.
//
// The node's pods reach the API through the cache too (PodAccess): each
// with its own service-account token, and served offline only what the
// server answered that token.
package apiproxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apiserver/pkg/endpoints/request"

	"github.com/kedge-dev/kedge/pkg/pki"
)

// FlushInterval is how often changed cache entries are written to disk:
// the price of a kill -9 is at most this much of the latest changes.
const FlushInterval = 10 * time.Second

// Options configure the proxy.
type Options struct {
	// Port on 127.0.0.1; 0 picks a free one.
	Port int
	// Upstream is the agent's load balancer (https://127.0.0.1:6444).
	Upstream string
	// ServerCA verifies the servers, ClientCA the node's components.
	ServerCA, ClientCA string
	// TLSDir holds the proxy's own CA and serving certificate and the
	// key the cache is encrypted with.
	TLSDir string
	// CacheDir holds the cache entries.
	CacheDir string
	Log      *slog.Logger
}

// Proxy is the API cache component.
type Proxy struct {
	o        Options
	ln       net.Listener
	upstream *url.URL
	cache    *cache
	serverCA *x509.CertPool
	srv      *http.Server

	mu      sync.Mutex
	pairs   [][2]string // registered certificate and key files
	ids     map[[32]byte]*identity
	pods    *identity // the pods' way upstream (PodAccess)
	offline bool
	since   time.Time
	served  int
	back    chan struct{}                       // closed when a server answers again
	watches map[string]map[chan []byte]struct{} // held watches by list key

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// identity is one client's way upstream: a component's under its own
// certificate, or a pod's with its bearer token.
type identity struct {
	rt http.RoundTripper
	rp *httputil.ReverseProxy
	// scope prefixes the cache keys of a pod's answers: a pod is served
	// only what the server answered its own token. Empty for the node's
	// components, which share what they read.
	scope string
}

// New opens the listener and the cache, and makes the proxy's serving
// certificate, so the kubeconfigs written before anything starts can
// name URL and CACert.
func New(o Options) (*Proxy, error) {
	u, err := url.Parse(o.Upstream)
	if err != nil {
		return nil, fmt.Errorf("api proxy upstream %q: %w", o.Upstream, err)
	}
	if err := os.MkdirAll(o.TLSDir, 0o700); err != nil {
		return nil, err
	}
	if err := pki.EnsureCA(filepath.Join(o.TLSDir, "apiproxy-ca.crt"), filepath.Join(o.TLSDir, "apiproxy-ca.key"), "kedge-apiproxy-ca"); err != nil {
		return nil, fmt.Errorf("api proxy CA: %w", err)
	}
	if err := pki.IssueServingCert(filepath.Join(o.TLSDir, "apiproxy-ca.crt"), filepath.Join(o.TLSDir, "apiproxy-ca.key"),
		filepath.Join(o.TLSDir, "serving-apiproxy.crt"), filepath.Join(o.TLSDir, "serving-apiproxy.key"), "kedge-apiproxy", []string{"127.0.0.1", "localhost"}); err != nil {
		return nil, fmt.Errorf("api proxy serving certificate: %w", err)
	}
	c, err := openCache(o.CacheDir, filepath.Join(o.TLSDir, "apiproxy-cache.key"), o.Log)
	if err != nil {
		return nil, fmt.Errorf("node cache %s: %w", o.CacheDir, err)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(o.Port)))
	if err != nil {
		return nil, fmt.Errorf("api proxy on 127.0.0.1:%d: %w", o.Port, err)
	}
	return &Proxy{o: o, ln: ln, upstream: u, cache: c, ids: map[[32]byte]*identity{}, watches: map[string]map[chan []byte]struct{}{}}, nil
}

// URL is the API URL of the node's components.
func (p *Proxy) URL() string { return "https://" + p.ln.Addr().String() }

// CACert is the CA the node's components verify the proxy with.
func (p *Proxy) CACert() string { return filepath.Join(p.o.TLSDir, "apiproxy-ca.crt") }

// AddIdentity registers a component's client certificate and key files:
// requests made with that certificate go upstream with it.
func (p *Proxy) AddIdentity(certFile, keyFile string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pairs = append(p.pairs, [2]string{certFile, keyFile})
}

func (p *Proxy) Name() string { return "api-cache" }

func (p *Proxy) Start(context.Context) error {
	serverCA, err := pool(p.o.ServerCA)
	if err != nil {
		return err
	}
	clientCA, err := pool(p.o.ClientCA)
	if err != nil {
		return err
	}
	p.serverCA = serverCA
	p.pods = p.newIdentity(nil)
	serving, err := tls.LoadX509KeyPair(filepath.Join(p.o.TLSDir, "serving-apiproxy.crt"), filepath.Join(p.o.TLSDir, "serving-apiproxy.key"))
	if err != nil {
		return err
	}
	p.srv = &http.Server{
		Handler:           p,
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          slog.NewLogLogger(p.o.Log.Handler(), slog.LevelDebug),
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{serving},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    clientCA,
			MinVersion:   tls.VersionTLS12,
			NextProtos:   []string{"h2", "http/1.1"},
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.wg.Add(3)
	go func() { defer p.wg.Done(); _ = p.srv.ServeTLS(p.ln, "", "") }()
	go func() { defer p.wg.Done(); p.flushLoop(ctx) }()
	go func() { defer p.wg.Done(); p.probeLoop(ctx) }()
	p.o.Log.Info("node API cache", "listen", p.ln.Addr().String(), "upstream", p.o.Upstream, "entries", len(p.cache.entries), "dir", p.o.CacheDir)
	return nil
}

func (p *Proxy) Ready(context.Context) error { return nil }

func (p *Proxy) Stop() error {
	if p.cancel == nil {
		return p.ln.Close()
	}
	p.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := p.srv.Shutdown(ctx); err != nil {
		p.srv.Close()
	}
	p.wg.Wait()
	return p.cache.flush()
}

func pool(file string) (*x509.CertPool, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%s: no certificate", file)
	}
	return pool, nil
}

func (p *Proxy) flushLoop(ctx context.Context) {
	t := time.NewTicker(FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := p.cache.flush(); err != nil {
			p.o.Log.Warn("writing the node cache", "err", err)
		}
	}
}

// probeLoop asks the servers' /ping every 3 s while they are away.
func (p *Proxy) probeLoop(ctx context.Context) {
	client := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.serverCA, MinVersion: tls.VersionTLS12}}}
	t := time.NewTicker(3 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p.mu.Lock()
		off := p.offline
		p.mu.Unlock()
		if !off {
			continue
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.upstream.String()+"/ping", nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				p.online()
			}
		}
	}
}

// offlineNow notes that no server answered.
func (p *Proxy) offlineNow(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.offline {
		return
	}
	p.offline, p.since, p.served, p.back = true, time.Now(), 0, make(chan struct{})
	p.o.Log.Warn("no API server answers: the node is served from its cache", "err", err)
}

// online notes that a server answered; held watches end, so their
// clients watch the server again.
func (p *Proxy) online() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.offline {
		return
	}
	p.offline = false
	close(p.back)
	p.o.Log.Info("the API server answers again", "offline", time.Since(p.since).Round(time.Second).String(), "servedFromCache", p.served)
}

func (p *Proxy) countServed() {
	p.mu.Lock()
	p.served++
	p.mu.Unlock()
}

// backChan is closed when a server answers again (nil: online now).
func (p *Proxy) backChan() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.offline {
		return nil
	}
	return p.back
}

// identity is the way upstream of the request's client certificate.
func (p *Proxy) identity(r *http.Request) *identity {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return nil
	}
	sum := sha256.Sum256(r.TLS.PeerCertificates[0].Raw)
	p.mu.Lock()
	defer p.mu.Unlock()
	if id := p.ids[sum]; id != nil {
		return id
	}
	// A certificate renewed since: load the pairs again.
	for _, pr := range p.pairs {
		pair, err := tls.LoadX509KeyPair(pr[0], pr[1])
		if err != nil {
			continue
		}
		s := sha256.Sum256(pair.Certificate[0])
		if s == sum {
			id := p.newIdentity([]tls.Certificate{pair})
			p.ids[sum] = id
			return id
		}
	}
	return nil
}

// newIdentity is a way upstream under certs (none: a pod's, whose bearer
// token goes along in its requests).
func (p *Proxy) newIdentity(certs []tls.Certificate) *identity {
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: p.serverCA, Certificates: certs, MinVersion: tls.VersionTLS12},
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: 10 * time.Second,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   true,
	}
	// HTTP/2 pings find a connection whose server went away.
	if h2, err := http2.ConfigureTransports(tr); err == nil {
		h2.ReadIdleTimeout, h2.PingTimeout = 15*time.Second, 5*time.Second
	}
	id := &identity{rt: tr}
	id.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(p.upstream)
			pr.Out.Host = ""
		},
		Transport:     tr,
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				return
			}
			p.offlineNow(err)
			writeStatus(w, http.StatusServiceUnavailable, "kedge: no API server answers and this request cannot be served from the node's cache")
		},
	}
	return id
}

var errOffline = errors.New("no API server answered since the last try")

var infoFactory = &request.RequestInfoFactory{APIPrefixes: sets.NewString("api", "apis"), GrouplessAPIPrefixes: sets.NewString("api")}

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := p.identity(r)
	if id == nil {
		writeStatus(w, http.StatusUnauthorized, "kedge: this client certificate is not one of the node's components")
		return
	}
	p.serve(w, r, id)
}

// serve answers one request of id: reads and tokens through the cache,
// the rest relayed while a server answers.
func (p *Proxy) serve(w http.ResponseWriter, r *http.Request, id *identity) {
	info, err := infoFactory.NewRequestInfo(r)
	if err != nil || !info.IsResourceRequest {
		id.rp.ServeHTTP(w, r)
		return
	}
	switch {
	case r.Method == http.MethodGet && info.Subresource == "" && info.Verb == "watch":
		p.watch(w, r, id, id.scope+listKey(r))
	case r.Method == http.MethodGet && info.Subresource == "" && info.Verb == "list":
		p.read(w, r, id, id.scope+listKey(r), info)
	case r.Method == http.MethodGet && info.Subresource == "" && info.Verb == "get":
		p.read(w, r, id, id.scope+objectKeyOf(r.URL.Path), info)
	case r.Method == http.MethodPost && info.Resource == "serviceaccounts" && info.Subresource == "token":
		p.token(w, r, id)
	default:
		if p.isOffline() {
			if id.scope == "" && r.Method == http.MethodPatch && info.Resource == "pods" && info.Subresource == "status" {
				p.notePodStatus(r, info)
			}
			writeStatus(w, http.StatusServiceUnavailable, "kedge: no API server answers; try again once the node is back in touch")
			return
		}
		id.rp.ServeHTTP(w, r)
	}
}

// listKey names a list by its path and selectors.
func listKey(r *http.Request) string {
	q := r.URL.Query()
	v := url.Values{}
	for _, k := range []string{"labelSelector", "fieldSelector"} {
		if s := q.Get(k); s != "" {
			v.Set(k, s)
		}
	}
	return "list:" + r.URL.Path + "?" + v.Encode()
}

// send makes the request upstream under id, asking for JSON.
func (p *Proxy) send(r *http.Request, id *identity, body []byte) (*http.Response, error) {
	u := *p.upstream
	u.Path, u.RawPath, u.RawQuery = r.URL.Path, r.URL.RawPath, r.URL.RawQuery
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	out, err := http.NewRequestWithContext(r.Context(), r.Method, u.String(), rd)
	if err != nil {
		return nil, err
	}
	for _, h := range []string{"User-Agent", "Content-Type", "Authorization", "Impersonate-User", "Impersonate-Group"} {
		if v := r.Header.Values(h); len(v) > 0 {
			out.Header[h] = v
		}
	}
	out.Header.Set("Accept", "application/json")
	return id.rt.RoundTrip(out)
}

// isOffline: no server answered the last request, and /ping has not
// answered since. Reads are then served from the cache at once, without
// waiting for the load balancer to give up on every server again.
func (p *Proxy) isOffline() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.offline
}

func (p *Proxy) read(w http.ResponseWriter, r *http.Request, id *identity, key string, info *request.RequestInfo) {
	var resp *http.Response
	err := errOffline
	if !p.isOffline() {
		resp, err = p.send(r, id, nil)
	}
	var body []byte
	if err == nil {
		body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err != nil {
		if r.Context().Err() != nil {
			return
		}
		p.offlineNow(err)
		var cached []byte
		var at time.Time
		ok := false
		if info.Verb == "list" {
			cached, at, ok = p.cache.getList(key)
		} else {
			cached, at, ok = p.cache.getObject(id.scope, r.URL.Path, info.Namespace, info.Name)
		}
		if !ok {
			writeStatus(w, http.StatusServiceUnavailable, "kedge: no API server answers and the node's cache has no copy of "+r.URL.Path)
			return
		}
		p.countServed()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Add("Warning", stale(at))
		w.WriteHeader(http.StatusOK)
		w.Write(cached)
		return
	}
	p.online()
	if resp.StatusCode == http.StatusOK {
		if info.Verb == "list" {
			if r.URL.Query().Get("continue") == "" {
				if err := p.cache.putList(key, body); err != nil {
					p.o.Log.Debug("not caching a list", "path", r.URL.Path, "err", err)
				}
			}
		} else {
			p.cache.putObject(key, body, time.Time{})
		}
	}
	copyHeader(w.Header(), resp.Header)
	w.WriteHeader(resp.StatusCode)
	w.Write(body)
}

// watch relays a watch and applies its events to the cached list; with
// no server it holds the watch open, empty, until one answers again.
func (p *Proxy) watch(w http.ResponseWriter, r *http.Request, id *identity, key string) {
	var resp *http.Response
	err := errOffline
	if !p.isOffline() {
		resp, err = p.send(r, id, nil)
	}
	if err != nil {
		if r.Context().Err() != nil {
			return
		}
		p.offlineNow(err)
		p.hold(w, r, key)
		return
	}
	defer resp.Body.Close()
	p.online()
	copyHeader(w.Header(), resp.Header)
	w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(w)
	rc.Flush()
	if resp.StatusCode != http.StatusOK {
		io.Copy(w, resp.Body)
		return
	}
	// A streaming list (client-go's WatchList) sends the whole list as its
	// first events: they replace the cached list.
	stream := &streamingList{key: key, items: map[string]json.RawMessage{}, done: !sendsInitialEvents(r)}
	dec := json.NewDecoder(io.TeeReader(resp.Body, flusher{w, rc}))
	for {
		var ev struct {
			Type   string          `json:"type"`
			Object json.RawMessage `json:"object"`
		}
		if err := dec.Decode(&ev); err != nil {
			return
		}
		p.cache.streamEvent(stream, ev.Type, ev.Object)
	}
}

func sendsInitialEvents(r *http.Request) bool {
	v, _ := strconv.ParseBool(r.URL.Query().Get("sendInitialEvents"))
	return v
}

func (p *Proxy) hold(w http.ResponseWriter, r *http.Request, key string) {
	back := p.backChan()
	if back == nil || !p.cache.hasList(key) {
		writeStatus(w, http.StatusServiceUnavailable, "kedge: no API server answers")
		return
	}
	timeout := 30 * time.Minute
	if s, err := strconv.Atoi(r.URL.Query().Get("timeoutSeconds")); err == nil && s > 0 {
		timeout = time.Duration(s) * time.Second
	}
	w.Header().Set("Content-Type", "application/json")
	if sendsInitialEvents(r) {
		events, at, ok := p.cache.initialEvents(key)
		if !ok {
			writeStatus(w, http.StatusServiceUnavailable, "kedge: no API server answers")
			return
		}
		p.countServed()
		w.Header().Add("Warning", stale(at))
		w.WriteHeader(http.StatusOK)
		w.Write(events)
	} else {
		w.WriteHeader(http.StatusOK)
	}
	events, stop := p.subscribe(key)
	defer stop()
	if local := p.cache.localEvents(key); len(local) > 0 {
		w.Write(local)
	}
	rc := http.NewResponseController(w)
	rc.Flush()
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-back:
			return
		case <-t.C:
			return
		case ev := <-events:
			if _, err := w.Write(ev); err != nil {
				return
			}
			rc.Flush()
		}
	}
}

// subscribe registers a held watch on the list at key for the events of
// the node's own changes.
func (p *Proxy) subscribe(key string) (<-chan []byte, func()) {
	ch := make(chan []byte, 16)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.watches[key] == nil {
		p.watches[key] = map[chan []byte]struct{}{}
	}
	p.watches[key][ch] = struct{}{}
	return ch, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		delete(p.watches[key], ch)
	}
}

// notePodStatus takes note of a status the kubelet could not write: the
// cached endpoints of the pod follow its new address and readiness.
func (p *Proxy) notePodStatus(r *http.Request, info *request.RequestInfo) {
	patch, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil || r.Header.Get("Content-Type") != "application/strategic-merge-patch+json" {
		return
	}
	pod := p.cache.podStatus(info.Namespace, info.Name, patch)
	if pod == nil {
		return
	}
	for key, events := range p.cache.podEndpoints(pod) {
		p.o.Log.Info("the node's own endpoints follow its pod while no server answers", "pod", info.Namespace+"/"+info.Name, "ips", pod.Status.PodIPs, "list", key)
		p.mu.Lock()
		for ch := range p.watches[key] {
			select {
			case ch <- events:
			default:
			}
		}
		p.mu.Unlock()
	}
}

// token relays a TokenRequest and keeps the answer: a pod that starts
// while no server answers gets the token it last had, until it expires.
func (p *Proxy) token(w http.ResponseWriter, r *http.Request, id *identity) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		writeStatus(w, http.StatusBadRequest, "reading the request: "+err.Error())
		return
	}
	sum := sha256.Sum256(body)
	key := id.scope + "token:" + r.URL.Path + ":" + hex.EncodeToString(sum[:])
	var resp *http.Response
	err = errOffline
	if !p.isOffline() {
		resp, err = p.send(r, id, body)
	}
	if err != nil {
		if r.Context().Err() != nil {
			return
		}
		p.offlineNow(err)
		cached, ok := p.cache.getToken(key)
		if !ok {
			writeStatus(w, http.StatusServiceUnavailable, "kedge: no API server answers and the node holds no valid token for "+r.URL.Path)
			return
		}
		p.countServed()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		w.Write(cached)
		return
	}
	defer resp.Body.Close()
	p.online()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		writeStatus(w, http.StatusBadGateway, "reading the server's answer: "+err.Error())
		return
	}
	if resp.StatusCode == http.StatusCreated || resp.StatusCode == http.StatusOK {
		var tr struct {
			Status struct {
				ExpirationTimestamp time.Time `json:"expirationTimestamp"`
			} `json:"status"`
		}
		if json.Unmarshal(out, &tr) == nil && !tr.Status.ExpirationTimestamp.IsZero() {
			p.cache.putObject(key, out, tr.Status.ExpirationTimestamp)
		}
	}
	copyHeader(w.Header(), resp.Header)
	w.WriteHeader(resp.StatusCode)
	w.Write(out)
}

type flusher struct {
	w  io.Writer
	rc *http.ResponseController
}

func (f flusher) Write(b []byte) (int, error) {
	n, err := f.w.Write(b)
	if err == nil {
		err = f.rc.Flush()
	}
	return n, err
}

func copyHeader(dst, src http.Header) {
	for k, v := range src {
		switch http.CanonicalHeaderKey(k) {
		case "Content-Length", "Connection", "Transfer-Encoding", "Keep-Alive":
			continue
		}
		dst[k] = v
	}
}

// stale is the Warning a cached answer carries (RFC 7234 code 299, as
// the API server's own warnings): client-go logs it.
func stale(at time.Time) string {
	return fmt.Sprintf(`299 - "kedge: no API server answers; this is the node's cached copy of %s"`, at.UTC().Format(time.RFC3339))
}

func writeStatus(w http.ResponseWriter, code int, msg string) {
	reason := map[int]string{http.StatusServiceUnavailable: "ServiceUnavailable", http.StatusUnauthorized: "Unauthorized", http.StatusBadRequest: "BadRequest"}[code]
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"kind": "Status", "apiVersion": "v1", "metadata": map[string]any{},
		"status": "Failure", "message": msg, "reason": reason, "code": code,
	})
}
