// Package loadbalancer is an agent's way to the API: a TCP proxy on
// loopback that knows every server. The kubelet, kube-proxy, flannel and
// kedge's node controllers all talk to it; it forwards each connection to
// a server that answers, learns the servers from the kubernetes Service's
// endpoints (kept on disk for the next start), and closes the connections
// of a server that stops answering, so its clients reconnect to a live
// one within seconds. TLS passes through: the clients verify the servers.
package loadbalancer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kedge-dev/kedge/pkg/datadir"
)

// LB is the load balancer component.
type LB struct {
	// Default is the server the agent was told to join (host:port); it
	// stays in the list, so an agent can always find its way back.
	Default string
	// StateFile keeps the servers last learnt.
	StateFile string
	Log       *slog.Logger

	ln net.Listener

	mu      sync.Mutex
	servers []string
	down    map[string]bool
	fails   map[string]int // consecutive failed probes
	current string
	conns   map[string]map[net.Conn]struct{} // by server, the proxied connections

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New listens on 127.0.0.1:port (0: any free port) at once, so the
// kubeconfigs written before the components start can name it.
func New(port int, defaultServer, stateFile string, log *slog.Logger) (*LB, error) {
	if err := os.MkdirAll(filepath.Dir(stateFile), 0o700); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return nil, fmt.Errorf("agent load balancer on 127.0.0.1:%d (--lb-server-port): %w", port, err)
	}
	lb := &LB{Default: defaultServer, StateFile: stateFile, Log: log, ln: ln,
		down: map[string]bool{}, fails: map[string]int{}, conns: map[string]map[net.Conn]struct{}{}}
	lb.servers = lb.merge(lb.load())
	return lb, nil
}

// URL is the API URL the node's components use.
func (lb *LB) URL() string { return "https://" + lb.ln.Addr().String() }

func (lb *LB) Name() string { return "loadbalancer" }

func (lb *LB) Start(context.Context) error {
	ctx, cancel := context.WithCancel(context.Background())
	lb.cancel = cancel
	lb.wg.Add(2)
	go func() { defer lb.wg.Done(); lb.serve(ctx) }()
	go func() { defer lb.wg.Done(); lb.check(ctx) }()
	lb.Log.Info("agent load balancer", "listen", lb.ln.Addr().String(), "servers", lb.Servers())
	return nil
}

func (lb *LB) Ready(context.Context) error { return nil }

func (lb *LB) Stop() error {
	if lb.cancel != nil {
		lb.cancel()
	}
	lb.ln.Close()
	lb.mu.Lock()
	for _, cs := range lb.conns {
		for c := range cs {
			c.Close()
		}
	}
	lb.mu.Unlock()
	lb.wg.Wait()
	return nil
}

// Servers is the current list.
func (lb *LB) Servers() []string {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	return slices.Clone(lb.servers)
}

func (lb *LB) merge(learnt []string) []string {
	set := map[string]bool{lb.Default: true}
	for _, s := range learnt {
		set[s] = true
	}
	out := make([]string, 0, len(set))
	for s := range set {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

func (lb *LB) load() []string {
	data, err := os.ReadFile(lb.StateFile)
	if err != nil {
		return nil
	}
	var s struct{ Servers []string }
	if json.Unmarshal(data, &s) != nil {
		return nil
	}
	return s.Servers
}

// SetServers replaces the learnt servers (the default always stays).
func (lb *LB) SetServers(servers []string) {
	merged := lb.merge(servers)
	lb.mu.Lock()
	changed := !slices.Equal(merged, lb.servers)
	lb.servers = merged
	lb.mu.Unlock()
	if !changed {
		return
	}
	lb.Log.Info("servers", "servers", merged)
	data, _ := json.Marshal(struct{ Servers []string }{merged})
	if err := datadir.WriteFileAtomic(lb.StateFile, data, 0o600); err != nil {
		lb.Log.Warn("cannot keep the server list", "file", lb.StateFile, "err", err)
	}
}

// order is the servers to try: the current one, then those up, then
// those down (all may have come back).
func (lb *LB) order() []string {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	var up, down []string
	for _, s := range lb.servers {
		switch {
		case s == lb.current:
		case lb.down[s]:
			down = append(down, s)
		default:
			up = append(up, s)
		}
	}
	out := []string{}
	if lb.current != "" && slices.Contains(lb.servers, lb.current) && !lb.down[lb.current] {
		out = append(out, lb.current)
	}
	return append(append(out, up...), down...)
}

func (lb *LB) serve(ctx context.Context) {
	for {
		c, err := lb.ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(100 * time.Millisecond)
			continue
		}
		lb.wg.Add(1)
		go func() { defer lb.wg.Done(); lb.proxy(ctx, c) }()
	}
}

func (lb *LB) proxy(ctx context.Context, client net.Conn) {
	defer client.Close()
	var server net.Conn
	var target string
	for _, s := range lb.order() {
		d := net.Dialer{Timeout: 3 * time.Second}
		c, err := d.DialContext(ctx, "tcp", s)
		if err == nil {
			server, target = c, s
			break
		}
		lb.markDown(s, err)
	}
	if server == nil {
		return
	}
	defer server.Close()
	lb.track(target, server, true)
	defer lb.track(target, server, false)
	lb.mu.Lock()
	if lb.current != target {
		if lb.current != "" {
			lb.Log.Info("switched server", "from", lb.current, "to", target)
		}
		lb.current = target
	}
	lb.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { io.Copy(server, client); closeWrite(server); done <- struct{}{} }()
	go func() { io.Copy(client, server); closeWrite(client); done <- struct{}{} }()
	<-done
	<-done
}

func closeWrite(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
}

func (lb *LB) track(server string, c net.Conn, add bool) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	if add {
		if lb.conns[server] == nil {
			lb.conns[server] = map[net.Conn]struct{}{}
		}
		lb.conns[server][c] = struct{}{}
		return
	}
	delete(lb.conns[server], c)
}

// markDown notes a server that did not answer and closes its proxied
// connections, so their clients come back through a live server.
func (lb *LB) markDown(server string, why error) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	if !lb.down[server] {
		lb.Log.Warn("server not answering", "server", server, "err", why)
	}
	lb.down[server] = true
	if lb.current == server {
		lb.current = ""
	}
	for c := range lb.conns[server] {
		c.Close()
	}
}

// check probes every server every 2 seconds: a TCP connect. Two misses
// in a row mark it down.
func (lb *LB) check(ctx context.Context) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, s := range lb.Servers() {
			c, err := net.DialTimeout("tcp", s, 2*time.Second)
			if err != nil {
				lb.mu.Lock()
				lb.fails[s]++
				n := lb.fails[s]
				lb.mu.Unlock()
				if n >= 2 {
					lb.markDown(s, err)
				}
				continue
			}
			c.Close()
			lb.mu.Lock()
			if lb.down[s] {
				lb.Log.Info("server answering again", "server", s)
			}
			delete(lb.down, s)
			delete(lb.fails, s)
			lb.mu.Unlock()
		}
	}
}

// Watcher keeps the LB's servers in line with the endpoints of the
// default/kubernetes Service, read through the LB itself.
type Watcher struct {
	LB     *LB
	Config *rest.Config
	Log    *slog.Logger

	cancel context.CancelFunc
	done   chan struct{}
}

func (w *Watcher) Name() string { return "loadbalancer-servers" }

func (w *Watcher) Start(context.Context) error {
	client, err := kubernetes.NewForConfig(w.Config)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel, w.done = cancel, make(chan struct{})
	go func() {
		defer close(w.done)
		for ctx.Err() == nil {
			if err := w.watch(ctx, client); err != nil && ctx.Err() == nil {
				w.Log.Debug("watching the kubernetes endpoints", "err", err)
			}
			select {
			case <-ctx.Done():
			case <-time.After(5 * time.Second):
			}
		}
	}()
	return nil
}

func (w *Watcher) watch(ctx context.Context, client kubernetes.Interface) error {
	es := client.DiscoveryV1().EndpointSlices("default")
	sel := metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=kubernetes"}
	list, err := es.List(ctx, sel)
	if err != nil {
		return err
	}
	w.LB.SetServers(servers(list.Items))
	sel.ResourceVersion = list.ResourceVersion
	wi, err := es.Watch(ctx, sel)
	if err != nil {
		return err
	}
	defer wi.Stop()
	for ev := range wi.ResultChan() {
		if ev.Type == watch.Error {
			return errors.New("watch error")
		}
		list, err := es.List(ctx, metav1.ListOptions{LabelSelector: sel.LabelSelector})
		if err != nil {
			return err
		}
		w.LB.SetServers(servers(list.Items))
	}
	return nil
}

// servers are the ready addresses of the kubernetes Service's slices.
func servers(items []discoveryv1.EndpointSlice) []string {
	var out []string
	for _, s := range items {
		port := 6443
		for _, p := range s.Ports {
			if p.Port != nil {
				port = int(*p.Port)
			}
		}
		for _, e := range s.Endpoints {
			if e.Conditions.Ready != nil && !*e.Conditions.Ready {
				continue
			}
			for _, a := range e.Addresses {
				out = append(out, net.JoinHostPort(a, strconv.Itoa(port)))
			}
		}
	}
	return out
}

func (w *Watcher) Ready(context.Context) error { return nil }

func (w *Watcher) Stop() error {
	if w.cancel != nil {
		w.cancel()
		<-w.done
	}
	return nil
}
