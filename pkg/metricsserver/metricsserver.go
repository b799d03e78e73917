// Package metricsserver runs the upstream metrics-server
// (sigs.k8s.io/metrics-server) inside the kedge server. It serves the
// metrics.k8s.io API on a loopback listener; the APIService
// v1beta1.metrics.k8s.io (manifests/metrics-server.yaml) names the Service
// kube-system/metrics-server, which the in-process aggregator resolves to
// that listener (controlplane.APIServer.LocalServices), so no port is
// opened to the network and no image is needed. It scrapes each kubelet's
// /metrics/resource over TLS verified against the server CA, as
// system:kedge-metrics-server.
package metricsserver

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
	"time"

	"github.com/spf13/pflag"
	openapicommon "k8s.io/kube-openapi/pkg/common"
	openapiutil "k8s.io/kube-openapi/pkg/util"
	"sigs.k8s.io/metrics-server/cmd/metrics-server/app/options"
)

// Service is the Service the APIService names.
const (
	Namespace   = "kube-system"
	ServiceName = "metrics-server"
)

// ServiceHost is the name the aggregator expects in the serving
// certificate.
const ServiceHost = ServiceName + "." + Namespace + ".svc"

// Options are the files metrics-server needs.
type Options struct {
	// Kubeconfig is metrics-server's identity, for the API and the kubelets.
	Kubeconfig string
	// ServingCert and ServingKey are its serving certificate (ServiceHost).
	ServingCert, ServingKey string
	// ClientCA and RequestHeaderCA verify the aggregator's requests.
	ClientCA, RequestHeaderCA string
	// RequestHeaderAllowedNames are the aggregator's proxy client names.
	RequestHeaderAllowedNames string
	// KubeletCA verifies the kubelets' serving certificates (the server
	// CA, which also signed ServingCert).
	KubeletCA string
	// Resolution is how often the kubelets are scraped.
	Resolution time.Duration
}

// Server is the metrics-server component.
type Server struct {
	Options
	Log *slog.Logger

	ln     net.Listener
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// New opens the loopback listener at once, so the apiserver, which starts
// first, knows where the Service is.
func New(o Options, log *slog.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("metrics-server listener: %w", err)
	}
	return &Server{Options: o, Log: log, ln: ln}, nil
}

// URL is where the aggregator reaches the Service.
func (s *Server) URL() *url.URL { return &url.URL{Scheme: "https", Host: s.ln.Addr().String()} }

func (s *Server) Name() string { return "metrics-server" }

func (s *Server) args() []string {
	return []string{
		"--kubeconfig=" + s.Kubeconfig,
		"--authentication-kubeconfig=" + s.Kubeconfig,
		"--authorization-kubeconfig=" + s.Kubeconfig,
		// The CAs are given, so the extension-apiserver-authentication
		// ConfigMap need not be read.
		"--authentication-skip-lookup=true",
		"--client-ca-file=" + s.ClientCA,
		"--requestheader-client-ca-file=" + s.RequestHeaderCA,
		"--requestheader-allowed-names=" + s.RequestHeaderAllowedNames,
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--tls-cert-file=" + s.ServingCert,
		"--tls-private-key-file=" + s.ServingKey,
		"--kubelet-certificate-authority=" + s.KubeletCA,
		"--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
		"--kubelet-use-node-status-port=true",
		"--metric-resolution=" + s.Resolution.String(),
		"--authorization-always-allow-paths=/healthz,/readyz,/livez",
	}
}

func (s *Server) Start(context.Context) error {
	o := options.NewOptions()
	fs := pflag.NewFlagSet("metrics-server", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	for _, f := range o.Flags().FlagSets {
		fs.AddFlagSet(f)
	}
	if err := fs.Parse(s.args()); err != nil {
		return fmt.Errorf("metrics-server flags: %w", err)
	}
	// Not o.Validate: it would also apply metrics-server's logging
	// options to the whole process, which pkg/log owns.
	if errs := o.KubeletClient.Validate(); len(errs) > 0 {
		return fmt.Errorf("metrics-server: %w", errors.Join(errs...))
	}
	o.SecureServing.Listener = s.ln
	cfg, err := o.ServerConfig()
	if err != nil {
		return fmt.Errorf("metrics-server config: %w", err)
	}
	aliasModelNames(&cfg.Apiserver.OpenAPIConfig.GetDefinitions, cfg.Apiserver.OpenAPIConfig.Definitions)
	aliasModelNames(&cfg.Apiserver.OpenAPIV3Config.GetDefinitions, cfg.Apiserver.OpenAPIV3Config.Definitions)
	srv, err := cfg.Complete()
	if err != nil {
		return fmt.Errorf("metrics-server: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel, s.done = cancel, make(chan struct{})
	go func() {
		defer close(s.done)
		s.err = srv.RunUntil(ctx.Done())
		if s.err != nil && ctx.Err() == nil {
			s.Log.Error("metrics-server stopped", "err", s.err)
		}
	}()
	return nil
}

// Ready is nil once metrics-server answers /livez on its listener.
func (s *Server) Ready(ctx context.Context) error {
	select {
	case <-s.done:
		return fmt.Errorf("metrics-server exited: %w", s.err)
	default:
	}
	ca, err := os.ReadFile(s.KubeletCA)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: ServiceHost}}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL().String()+"/livez", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("metrics-server /livez: %s", resp.Status)
	}
	return nil
}

func (s *Server) Stop() error {
	if s.cancel == nil {
		return s.ln.Close()
	}
	s.cancel()
	select {
	case <-s.done:
		return nil
	case <-time.After(15 * time.Second):
		return errors.New("metrics-server did not stop within 15s")
	}
}

// aliasModelNames also files metrics-server's generated OpenAPI models
// under the names Kubernetes 1.35+ gives them (io.k8s.metrics...; the
// types' OpenAPIModelName), which the apiserver library now looks up.
// metrics-server v0.8.0 was generated before that change.
func aliasModelNames(get *openapicommon.GetOpenAPIDefinitions, defs map[string]openapicommon.OpenAPIDefinition) {
	for name, d := range defs {
		defs[openapiutil.ToRESTFriendlyName(name)] = d
	}
	if *get == nil {
		return
	}
	orig := *get
	*get = func(ref openapicommon.ReferenceCallback) map[string]openapicommon.OpenAPIDefinition {
		defs := orig(ref)
		out := make(map[string]openapicommon.OpenAPIDefinition, 2*len(defs))
		for name, d := range defs {
			out[name] = d
			out[openapiutil.ToRESTFriendlyName(name)] = d
		}
		return out
	}
}
