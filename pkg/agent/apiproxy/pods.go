package apiproxy

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	utiliptables "k8s.io/kubernetes/pkg/util/iptables"
)

// podChain is the nat chain that sends the node's pods' connections to
// the kubernetes Service to the node's cache.
const podChain utiliptables.Chain = "KEDGE-API-CACHE"

// podSyncInterval is how often PodAccess reads the kubernetes Service
// again and checks that its rules still come first.
const podSyncInterval = 15 * time.Second

// PodAccess lets the node's pods reach the API through the cache, as its
// components do. Pods find the API at the kubernetes Service
// (KUBERNETES_SERVICE_HOST, kubernetes.default.svc); a nat rule ahead of
// kube-proxy's sends those connections to a listener of the cache on the
// node's address, which serves a certificate for the Service's names
// signed by the server CA, the one the pods' ca.crt holds. Each request
// goes upstream with the pod's own bearer token, and what the server
// answered a token is kept for that token alone, so a pod gets offline
// only what it was allowed to read online.
type PodAccess struct {
	Proxy *Proxy
	// Client reads the kubernetes Service (through the cache).
	Client kubernetes.Interface
	// Issue makes sure CertFile and KeyFile hold a serving certificate
	// for sans signed by the server CA (the server signs it while it
	// answers; a valid one on disk needs no server).
	Issue             func(certFile, keyFile string, sans []string) error
	CertFile, KeyFile string
	NodeIP            string
	// Port on NodeIP; 0 picks a free one.
	Port          int
	ClusterDomain string
	Log           *slog.Logger

	ipt    utiliptables.Interface
	proto  utiliptables.Protocol
	ln     net.Listener
	srv    *http.Server
	cert   certFile
	cancel context.CancelFunc
	wg     sync.WaitGroup
	target string // the Service address the rule redirects, "ip:port"
	// issued is the SANs last issued for, and when: the certificate is
	// checked again when they change, else daily.
	issued   string
	issuedAt time.Time
}

func (a *PodAccess) Name() string { return "api-cache-pods" }

func (a *PodAccess) Start(context.Context) error {
	ip := net.ParseIP(a.NodeIP)
	if ip == nil {
		return fmt.Errorf("api cache for pods: node IP %q is not an address", a.NodeIP)
	}
	proto := utiliptables.ProtocolIPv4
	if ip.To4() == nil {
		proto = utiliptables.ProtocolIPv6
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(a.NodeIP, strconv.Itoa(a.Port)))
	if err != nil {
		return fmt.Errorf("api cache for pods on %s:%d: %w", a.NodeIP, a.Port, err)
	}
	a.ln, a.ipt, a.proto = ln, utiliptables.New(proto), proto
	a.cert = certFile{cert: a.CertFile, key: a.KeyFile}
	a.srv = &http.Server{
		Handler:           http.HandlerFunc(a.Proxy.ServePod),
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          slog.NewLogLogger(a.Log.Handler(), slog.LevelDebug),
		TLSConfig:         &tls.Config{GetCertificate: a.cert.get, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}},
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	a.wg.Add(2)
	go func() { defer a.wg.Done(); _ = a.srv.ServeTLS(ln, "", "") }()
	go func() {
		defer a.wg.Done()
		t := time.NewTicker(podSyncInterval)
		defer t.Stop()
		for {
			a.sync(ctx)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return nil
}

func (a *PodAccess) Ready(context.Context) error { return nil }

// Stop removes the rules, so that while kedge is down the pods reach
// the servers directly through kube-proxy's rules.
func (a *PodAccess) Stop() error {
	if a.cancel == nil {
		return nil
	}
	a.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := a.srv.Shutdown(ctx); err != nil {
		a.srv.Close()
	}
	a.wg.Wait()
	return a.removeRules()
}

// sync reads the kubernetes Service, makes sure the certificate names
// it, and points the rules at the listener.
func (a *PodAccess) sync(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// A list: the node's identities may list Services, not get one.
	l, err := a.Client.CoreV1().Services(metav1.NamespaceDefault).List(ctx, metav1.ListOptions{FieldSelector: "metadata.name=kubernetes"})
	if err != nil || len(l.Items) == 0 {
		if ctx.Err() == nil {
			a.Log.Debug("the kubernetes Service is not known yet", "err", err)
		}
		return
	}
	svc := &l.Items[0]
	port := servicePort(svc)
	if svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == corev1.ClusterIPNone || port == 0 {
		return
	}
	sans := []string{svc.Spec.ClusterIP, "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc." + a.ClusterDomain, a.NodeIP}
	if key := strings.Join(sans, ","); key != a.issued || time.Since(a.issuedAt) > 24*time.Hour {
		if err := a.Issue(a.CertFile, a.KeyFile, sans); err != nil {
			a.Log.Warn("the certificate pods see on the node's cache", "err", err)
			if _, statErr := os.Stat(a.CertFile); statErr != nil {
				return
			}
		} else {
			a.issued, a.issuedAt = key, time.Now()
		}
		a.cert.reload() // Issue may have renewed it
	}
	target := net.JoinHostPort(svc.Spec.ClusterIP, strconv.Itoa(int(port)))
	if err := a.ensureRules(svc.Spec.ClusterIP, port, target != a.target); err != nil {
		a.Log.Warn("sending the pods' API connections to the node's cache", "err", err)
		return
	}
	if target != a.target {
		a.target = target
		a.Log.Info("the node's pods reach the API through its cache", "service", target, "listen", a.ln.Addr().String())
	}
}

func servicePort(svc *corev1.Service) int32 {
	for _, p := range svc.Spec.Ports {
		if p.Protocol == corev1.ProtocolTCP || p.Protocol == "" {
			return p.Port
		}
	}
	return 0
}

// jump is the rule in PREROUTING (the pods) and OUTPUT (host-network
// pods) that leads to podChain.
var jump = []string{"-m", "comment", "--comment", "kedge: pods reach the API through the node's cache", "-j", string(podChain)}

// ensureRules makes podChain redirect the Service to the listener, with
// the jumps to it ahead of kube-proxy's; moved drops the chain's old rule
// (a new Service address, or a rule left by an earlier run).
func (a *PodAccess) ensureRules(ip string, port int32, moved bool) error {
	if _, err := a.ipt.EnsureChain(utiliptables.TableNAT, podChain); err != nil {
		return err
	}
	if moved {
		if err := a.ipt.FlushChain(utiliptables.TableNAT, podChain); err != nil {
			return err
		}
	}
	bits := "/32"
	if strings.Contains(ip, ":") {
		bits = "/128"
	}
	if _, err := a.ipt.EnsureRule(utiliptables.Append, utiliptables.TableNAT, podChain,
		"-d", ip+bits, "-p", "tcp", "--dport", strconv.Itoa(int(port)), "-j", "DNAT", "--to-destination", a.ln.Addr().String()); err != nil {
		return err
	}
	for _, chain := range []utiliptables.Chain{utiliptables.ChainPrerouting, utiliptables.ChainOutput} {
		if first, err := a.firstRule(chain); err == nil && firstRuleJumps(first, chain, podChain) {
			continue
		}
		// Absent, or behind kube-proxy's: (re)insert it first.
		_ = a.ipt.DeleteRule(utiliptables.TableNAT, chain, jump...)
		if _, err := a.ipt.EnsureRule(utiliptables.Prepend, utiliptables.TableNAT, chain, jump...); err != nil {
			return err
		}
	}
	return nil
}

// firstRule is chain's first rule in the nat table, as iptables -S prints
// it: one chain, not the whole table (kube-proxy's is large).
func (a *PodAccess) firstRule(chain utiliptables.Chain) (string, error) {
	bin := "iptables"
	if a.proto == utiliptables.ProtocolIPv6 {
		bin = "ip6tables"
	}
	out, err := exec.Command(bin, "-w", "5", "-t", "nat", "-S", string(chain), "1").Output()
	return string(out), err
}

// firstRuleJumps reports whether chain's first rule in an iptables-save
// or iptables -S listing jumps to target.
func firstRuleJumps(dump string, chain, target utiliptables.Chain) bool {
	for _, line := range strings.Split(dump, "\n") {
		if strings.HasPrefix(line, "-A "+string(chain)+" ") {
			return strings.HasSuffix(line, "-j "+string(target))
		}
	}
	return false
}

func (a *PodAccess) removeRules() error {
	if a.target == "" {
		return nil
	}
	for _, chain := range []utiliptables.Chain{utiliptables.ChainPrerouting, utiliptables.ChainOutput} {
		_ = a.ipt.DeleteRule(utiliptables.TableNAT, chain, jump...)
	}
	_ = a.ipt.FlushChain(utiliptables.TableNAT, podChain)
	return a.ipt.DeleteChain(utiliptables.TableNAT, podChain)
}

// certFile serves a certificate pair from files, read on first use and
// again after reload (sync calls it when it may have renewed them).
type certFile struct {
	cert, key string

	mu   sync.Mutex
	pair *tls.Certificate
}

func (c *certFile) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pair == nil {
		pair, err := tls.LoadX509KeyPair(c.cert, c.key)
		if err != nil {
			return nil, err
		}
		c.pair = &pair
	}
	return c.pair, nil
}

// reload makes the next handshake read the files again.
func (c *certFile) reload() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pair = nil
}

// ServePod answers a pod's request, made with its service-account token.
func (p *Proxy) ServePod(w http.ResponseWriter, r *http.Request) {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" {
		writeStatus(w, http.StatusUnauthorized, "kedge: the node's cache answers pods that send a bearer token")
		return
	}
	// Offline nobody checks the token: the cache has answers only for
	// tokens the server accepted, and serves them until they expire.
	if p.isOffline() && expired(token, time.Now()) {
		writeStatus(w, http.StatusUnauthorized, "kedge: no API server answers and this token has expired")
		return
	}
	p.serve(w, r, &identity{rt: p.pods.rt, rp: p.pods.rp, scope: tokenScope(token)})
}

// expired reports whether a JWT's exp claim is past (a token that is not
// a JWT, or has no exp, is not known to have expired).
func expired(token string, now time.Time) bool {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return false
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return false
	}
	var claims struct {
		Exp int64 `json:"exp"`
	}
	if json.Unmarshal(payload, &claims) != nil || claims.Exp == 0 {
		return false
	}
	return now.Unix() >= claims.Exp
}
