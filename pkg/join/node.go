package join

import (
	"bytes"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/kedge-dev/kedge/pkg/datadir"
	"github.com/kedge-dev/kedge/pkg/pki"
)

// SignPath is where a joining agent asks the server to sign its node
// certificates, authenticated with the join token.
const SignPath = "/v1-kedge/sign"

// Kinds of node certificate, and the identity the server gives each.
const (
	KindKubelet        = "kubelet"         // system:node:<node>, group system:nodes
	KindKubeletServing = "kubelet-serving" // the kubelet's serving certificate
	KindKubeProxy      = "kube-proxy"      // system:kube-proxy
	KindFlannel        = "flannel"         // system:kedge-flannel
	KindServiceLB      = "servicelb"       // system:kedge-servicelb
	KindLocalStorage   = "local-storage"   // system:kedge-local-storage
	KindNetworkPolicy  = "network-policy"  // system:kedge-network-policy
)

// LeafFor is the certificate of kind for node: the server's decision,
// which the agent mirrors to know when to ask again.
func LeafFor(kind, node string, sans []string) (leaf pki.Leaf, clientCert bool, err error) {
	switch kind {
	case KindKubelet:
		return pki.Leaf{CommonName: "system:node:" + node, Orgs: []string{"system:nodes"}}, true, nil
	case KindKubeletServing:
		return pki.Leaf{CommonName: node, Serving: true, SANs: sans}, false, nil
	case KindKubeProxy:
		return pki.Leaf{CommonName: "system:kube-proxy"}, true, nil
	case KindFlannel:
		return pki.Leaf{CommonName: "system:kedge-flannel"}, true, nil
	case KindServiceLB:
		return pki.Leaf{CommonName: "system:kedge-servicelb"}, true, nil
	case KindLocalStorage:
		return pki.Leaf{CommonName: "system:kedge-local-storage"}, true, nil
	case KindNetworkPolicy:
		return pki.Leaf{CommonName: "system:kedge-network-policy"}, true, nil
	}
	return pki.Leaf{}, false, fmt.Errorf("unknown certificate kind %q", kind)
}

type signRequest struct {
	Kind     string   `json:"kind"`
	NodeName string   `json:"nodeName"`
	SANs     []string `json:"sans,omitempty"`
	CSR      string   `json:"csr"`
	// NodePassword binds the node name to the machine (see Store).
	NodePassword string `json:"nodePassword,omitempty"`
}

type signResponse struct {
	Cert     string `json:"cert"`
	ClientCA string `json:"clientCA"`
}

// Signer serves SignPath on the server: a request carrying a join token
// (HTTP basic auth, the token's user and secret) gets its CSR signed with
// the identity its kind calls for, once its node password matches the one
// its node name was first registered with.
type Signer struct {
	// Auth checks the token; without it, Token alone is accepted.
	Auth  *Authenticator
	Token Token
	TLS   pki.Files
	// Passwords, if set, binds node names to machines.
	Passwords *Store
}

func (s *Signer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != SignPath {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodPost {
		http.Error(w, "use POST", http.StatusMethodNotAllowed)
		return
	}
	if s.Auth != nil && s.Auth.Authenticate(r) == "" || s.Auth == nil && !s.Token.Authorizes(r) {
		http.Error(w, "invalid join token", http.StatusUnauthorized)
		return
	}
	var req signRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
		http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
		return
	}
	if errs := validation.IsDNS1123Subdomain(req.NodeName); len(errs) > 0 {
		http.Error(w, fmt.Sprintf("node name %q: %s", req.NodeName, strings.Join(errs, "; ")), http.StatusBadRequest)
		return
	}
	leaf, client, err := LeafFor(req.Kind, req.NodeName, req.SANs)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	// Bad input is refused before the node password store is asked.
	if err := pki.CheckRequest([]byte(req.CSR)); err != nil {
		http.Error(w, "csr: "+err.Error(), http.StatusBadRequest)
		return
	}
	if s.Passwords != nil {
		if err := s.Passwords.VerifyNodePassword(r.Context(), req.NodeName, req.NodePassword); err != nil {
			code := http.StatusServiceUnavailable
			if errors.Is(err, ErrNodePassword) {
				code = http.StatusForbidden
			}
			http.Error(w, err.Error(), code)
			return
		}
	}
	caCert, caKey := s.TLS.ServerCACert, s.TLS.ServerCAKey
	if client {
		caCert, caKey = s.TLS.ClientCACert, s.TLS.ClientCAKey
	}
	cert, err := pki.SignRequest(caCert, caKey, []byte(req.CSR), leaf)
	if err != nil {
		http.Error(w, "sign: "+err.Error(), http.StatusBadRequest)
		return
	}
	clientCA, err := os.ReadFile(s.TLS.ClientCACert)
	if err != nil {
		http.Error(w, "client CA unavailable", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(signResponse{Cert: string(cert), ClientCA: string(clientCA)})
}

// Authorizes reports whether r carries t as HTTP basic auth (the token's
// user and secret), the credential of kedge's join endpoints.
func (t Token) Authorizes(r *http.Request) bool {
	user, secret, ok := r.BasicAuth()
	return ok && user == t.Username && subtle.ConstantTimeCompare([]byte(secret), []byte(t.Secret)) == 1
}

// Call POSTs (or GETs, with a nil in) JSON to path on the server with the
// token as credential, and decodes the JSON answer into out. Bootstrap
// first: the server's CA is what the connection trusts.
func (r *Remote) Call(ctx context.Context, path string, in, out any) error {
	if r.client == nil {
		return errors.New("join: Bootstrap first")
	}
	method, body := http.MethodGet, io.Reader(nil)
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return err
		}
		method, body = http.MethodPost, bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(r.Server, "/")+path, body)
	if err != nil {
		return err
	}
	req.SetBasicAuth(r.Token.Username, r.Token.Secret)
	req.Header.Set("Content-Type", "application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		return fmt.Errorf("%s%s: %w", r.Server, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if resp.StatusCode != http.StatusOK {
		return &ServerError{Code: resp.StatusCode, msg: fmt.Sprintf("%s%s: the server said %s: %s", r.Server, path, resp.Status, strings.TrimSpace(string(data)))}
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(data, out)
}

// ServerError is a server's answer other than 200 OK.
type ServerError struct {
	Code int // the HTTP status
	msg  string
}

func (e *ServerError) Error() string { return e.msg }

// Remote is an agent's link to a server it joins with a token: it pins
// the server's CA (checked against the token's hash) and has the server
// sign its node certificates. Files live in Dir.
type Remote struct {
	Server   string
	Token    Token
	NodeName string
	// NodePassword is sent with every signing request (see Store).
	NodePassword string
	Dir          string
	Log          *slog.Logger

	client *http.Client
	// caChanged: the server's CA changed since the last join (kedge
	// certificate rotate-ca), so every certificate is signed again once
	// (reissued) even if it still verifies through the old CA.
	caChanged bool
	reissued  map[string]bool
}

// ServerCACert and ClientCACert are the CA files Bootstrap writes.
func (r *Remote) ServerCACert() string { return filepath.Join(r.Dir, "server-ca.crt") }
func (r *Remote) ClientCACert() string { return filepath.Join(r.Dir, "client-ca.crt") }

// Bootstrap fetches the server's CA from /cacerts, verifies it against
// the token, and keeps it. It retries until the server answers or ctx
// ends; a CA that does not match the token stops it at once.
func (r *Remote) Bootstrap(ctx context.Context) error {
	if err := os.MkdirAll(r.Dir, 0o700); err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		ca, err := r.fetchCA(ctx)
		var notKedge errNotKedge
		if errors.As(err, &notKedge) {
			return fmt.Errorf("%s is not a kedge server: %w (check --server: https://SERVER:6443)", r.Server, err)
		}
		if err == nil {
			if err := r.trust(ca); err != nil {
				return err
			}
			if kept, err := os.ReadFile(r.ServerCACert()); err == nil && !bytes.Equal(kept, ca) {
				r.Log.Info("the server's CA changed since the last join: taking new node certificates")
				r.caChanged = true
			}
			return datadir.WriteFileAtomic(r.ServerCACert(), ca, 0o600)
		}
		// A node that joined before starts without its server (a reboot
		// while the link is down) on the CA it kept, checked again.
		if kept, kerr := os.ReadFile(r.ServerCACert()); kerr == nil && attempt == 0 && r.trust(kept) == nil {
			r.Log.Warn("the server does not answer: starting with the CA kept from the last join", "server", r.Server, "err", err)
			return nil
		}
		if attempt%5 == 0 {
			r.Log.Info("waiting for the server", "server", r.Server, "err", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("join %s: %w (last error: %v)", r.Server, ctx.Err(), err)
		case <-time.After(2 * time.Second):
		}
	}
}

// trust makes ca the CA that the join calls verify the server with.
func (r *Remote) trust(ca []byte) error {
	if err := r.verify(ca); err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return fmt.Errorf("%s/cacerts: no certificate in the answer", r.Server)
	}
	r.client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	return nil
}

func (r *Remote) fetchCA(ctx context.Context) ([]byte, error) {
	// The CA is not trusted yet: it is checked against the token after.
	insecure := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // verified by hash
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(r.Server, "/")+"/cacerts", nil)
	if err != nil {
		return nil, err
	}
	resp, err := insecure.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// Something answers, and it is not kedge: waiting will not help.
		return nil, errNotKedge{fmt.Errorf("GET /cacerts: %s", resp.Status)}
	}
	return io.ReadAll(io.LimitReader(resp.Body, 1<<20))
}

// errNotKedge: the URL answers HTTP, but not as a kedge server.
type errNotKedge struct{ error }

func (e errNotKedge) Unwrap() error { return e.error }

func (r *Remote) verify(ca []byte) error {
	if r.Token.CAHash == "" {
		r.Log.Warn("the token has no CA hash: trusting the server's CA without checking it (use the full K10... token from the server's token file)")
		return nil
	}
	// A CA rotated since the token was made still matches: the file
	// ends with the one the token names, which vouches for the new CA.
	if !pki.PinnedBy(ca, r.Token.CAHash) {
		return fmt.Errorf("the CA of %s (sha256 %s) is not the one the token names (%s): wrong server, or a token from another cluster", r.Server, pki.HashOf(ca), r.Token.CAHash)
	}
	return nil
}

// Issue makes sure certPath/keyPath hold a valid certificate of kind,
// asking the server to sign a new one when needed.
func (r *Remote) Issue(kind, certPath, keyPath string, sans []string) error {
	leaf, client, err := LeafFor(kind, r.NodeName, sans)
	if err != nil {
		return err
	}
	ca := r.ServerCACert()
	if client {
		ca = r.ClientCACert()
	}
	if pki.NeedsCert(ca, certPath, keyPath, leaf) == "" && (!r.caChanged || r.reissued[kind]) {
		return nil
	}
	if r.client == nil {
		return errors.New("join: Bootstrap first")
	}
	csr, err := pki.CertificateRequest(keyPath)
	if err != nil {
		return err
	}
	body, _ := json.Marshal(signRequest{Kind: kind, NodeName: r.NodeName, SANs: sans, CSR: string(csr), NodePassword: r.NodePassword})
	req, err := http.NewRequest(http.MethodPost, strings.TrimSuffix(r.Server, "/")+SignPath, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.SetBasicAuth(r.Token.Username, r.Token.Secret)
	req.Header.Set("Content-Type", "application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		return fmt.Errorf("%s certificate: %w", kind, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s certificate: the server said %s: %s", kind, resp.Status, strings.TrimSpace(string(data)))
	}
	var out signResponse
	if err := json.Unmarshal(data, &out); err != nil {
		return fmt.Errorf("%s certificate: %w", kind, err)
	}
	if err := datadir.WriteFileAtomic(r.ClientCACert(), []byte(out.ClientCA), 0o600); err != nil {
		return err
	}
	if err := pki.WriteCert(certPath, keyPath, []byte(out.Cert)); err != nil {
		return err
	}
	if r.caChanged {
		if r.reissued == nil {
			r.reissued = map[string]bool{}
		}
		r.reissued[kind] = true
	}
	return nil
}
