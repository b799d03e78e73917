package controlplane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	genericapiserver "k8s.io/apiserver/pkg/server"
	encryptionconfigcontroller "k8s.io/apiserver/pkg/server/options/encryptionconfig/controller"
	"k8s.io/client-go/rest"
	aggregatorapiserver "k8s.io/kube-aggregator/pkg/apiserver"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"

	"github.com/kedge-dev/kedge/pkg/component"
)

// APIServer runs kube-apiserver in-process on a listener kedge opened.
type APIServer struct {
	Args     Args
	Listener net.Listener
	// Wrap, if set, wraps the apiserver's full handler chain: kedge's own
	// endpoints share the API port this way, in front of authentication.
	Wrap func(http.Handler) http.Handler
	// LocalServices are Services the aggregator reaches in this process,
	// by "namespace/name": an APIService backed by one of them is proxied
	// to the URL (a loopback listener) rather than through the network.
	LocalServices map[string]*url.URL
	// Probe is a client that may read /readyz (kedge's supervisor cert).
	Probe ProbeClient
	Log   *slog.Logger

	cancel context.CancelFunc
	done   chan struct{}
}

func (a *APIServer) Name() string { return "kube-apiserver" }

func (a *APIServer) Start(ctx context.Context) error {
	fs, s := newAPIServerFlags()
	if err := parseInto(fs, "kube-apiserver", "kube-apiserver-arg", a.Args); err != nil {
		return err
	}
	if err := s.GenericServerRunOptions.ComponentGlobalsRegistry.Set(); err != nil {
		return fmt.Errorf("kube-apiserver feature gates: %w", err)
	}
	// Key rotations (kedge secrets-encrypt) apply within seconds, not the
	// minute the apiserver otherwise waits between looks at the file (a
	// read of a small file; nothing is written).
	encryptionconfigcontroller.EncryptionConfigFileChangePollDuration = 5 * time.Second
	// The loopback clients of the apiserver should not log self-issued
	// deprecation warnings.
	rest.SetDefaultWarningHandler(rest.NoWarnings{})
	s.SecureServing.Listener = a.Listener

	runCtx, cancel := context.WithCancel(context.Background())
	completed, err := s.Complete(runCtx)
	if err != nil {
		cancel()
		return fmt.Errorf("kube-apiserver options: %w", err)
	}
	if errs := completed.Validate(); len(errs) != 0 {
		cancel()
		return fmt.Errorf("kube-apiserver options (set with --kube-apiserver-arg): %w", utilerrors.NewAggregate(errs))
	}
	cfg, err := app.NewConfig(completed)
	if err != nil {
		cancel()
		return fmt.Errorf("kube-apiserver config: %w", err)
	}
	if a.Wrap != nil {
		// The aggregator is the outermost server of the chain: its handler
		// is what the secure port serves.
		gc := cfg.Aggregator.GenericConfig
		inner := gc.BuildHandlerChainFunc
		gc.BuildHandlerChainFunc = func(h http.Handler, c *genericapiserver.Config) http.Handler {
			return a.Wrap(inner(h, c))
		}
	}
	if len(a.LocalServices) > 0 {
		extra := &cfg.Aggregator.ExtraConfig
		extra.ServiceResolver = localResolver{local: a.LocalServices, next: extra.ServiceResolver}
	}
	cc, err := cfg.Complete()
	if err != nil {
		cancel()
		return fmt.Errorf("kube-apiserver config: %w", err)
	}
	server, err := app.CreateServerChain(cc)
	if err != nil {
		cancel()
		return fmt.Errorf("kube-apiserver: %w", err)
	}
	prepared, err := server.PrepareRun()
	if err != nil {
		cancel()
		return fmt.Errorf("kube-apiserver: %w", err)
	}
	a.cancel = cancel
	a.done = make(chan struct{})
	go func() {
		defer close(a.done)
		err := prepared.Run(runCtx)
		if runCtx.Err() == nil {
			component.Fail(ctx, fmt.Errorf("kube-apiserver exited: %w", err))
		}
	}()
	return nil
}

func (a *APIServer) Ready(ctx context.Context) error { return a.Probe.Get(ctx, "/readyz") }

func (a *APIServer) Stop() error { return stopAndWait(a.cancel, a.done) }

// Serving reports whether the apiserver runs: started, and not stopped.
func (a *APIServer) Serving() bool {
	if a.done == nil {
		return false
	}
	select {
	case <-a.done:
		return false
	default:
		return true
	}
}

// localResolver resolves kedge's in-process Services, then asks next.
type localResolver struct {
	local map[string]*url.URL
	next  aggregatorapiserver.ServiceResolver
}

func (r localResolver) ResolveEndpoint(namespace, name string, port int32) (*url.URL, error) {
	if u, ok := r.local[namespace+"/"+name]; ok {
		c := *u
		return &c, nil
	}
	return r.next.ResolveEndpoint(namespace, name, port)
}

func stopAndWait(cancel context.CancelFunc, done chan struct{}) error {
	if cancel == nil {
		return nil
	}
	cancel()
	select {
	case <-done:
		return nil
	case <-time.After(15 * time.Second):
		return errors.New("did not stop within 15s")
	}
}

// ProbeClient GETs health endpoints over HTTPS.
type ProbeClient struct {
	BaseURL string
	Client  *http.Client
}

// NewProbeClient returns a client for baseURL that trusts caFile (or skips
// verification when caFile is empty: self-signed component certs on
// loopback) and presents certFile/keyFile if given.
func NewProbeClient(baseURL, caFile, certFile, keyFile string) (ProbeClient, error) {
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile == "" {
		tlsCfg.InsecureSkipVerify = true
	} else {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return ProbeClient{}, fmt.Errorf("read CA %s: %w", caFile, err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		tlsCfg.RootCAs = pool
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return ProbeClient{}, fmt.Errorf("load client cert %s: %w", certFile, err)
		}
		tlsCfg.Certificates = []tls.Certificate{cert}
	}
	return ProbeClient{
		BaseURL: baseURL,
		Client:  &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}, Timeout: 5 * time.Second},
	}, nil
}

// Get returns nil if path answers 200.
func (p ProbeClient) Get(ctx context.Context, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.BaseURL+path, nil)
	if err != nil {
		return err
	}
	resp, err := p.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", path, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}
