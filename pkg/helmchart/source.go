package helmchart

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/cli"
)

// APIPlaceholder in a chart URL stands for this server, as in k3s.
const APIPlaceholder = "%{KUBERNETES_API}%"

// StaticPrefix is where the server serves the static charts directory.
const StaticPrefix = "/static/charts/"

// maxChart bounds a chart archive read from anywhere.
const maxChart = 64 << 20

// badInput marks an error a retry cannot fix: the object must change.
type badInput struct{ error }

func (b badInput) Unwrap() error { return b.error }

func invalid(format string, args ...any) error { return badInput{fmt.Errorf(format, args...)} }

// source finds and loads charts.
type source struct {
	// staticDir holds the charts served at StaticPrefix.
	staticDir string
	// apiHost is this server's host:port, for APIPlaceholder.
	apiHost string
	// serverCA verifies this server (charts served at StaticPrefix).
	serverCA []byte
	// helmHome holds Helm's repository cache and config.
	helmHome string
}

// archive is a loaded chart with the bytes it came from, for the hash.
type archive struct {
	chart *chart.Chart
	raw   []byte
}

// load returns the chart a HelmChart names. caBundle and auth come from
// the object's repoCA/repoCAConfigMap and authSecret.
func (s *source) load(ctx context.Context, spec Spec, caBundle []byte, user, password string) (archive, error) {
	switch {
	case spec.ChartContent != "":
		raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(spec.ChartContent))
		if err != nil {
			return archive{}, invalid("chartContent is not base64: %v", err)
		}
		return fromBytes(raw, "chartContent")
	case spec.Chart == "":
		return archive{}, invalid("neither chart nor chartContent is set")
	case strings.HasPrefix(spec.Chart, "http://") || strings.HasPrefix(spec.Chart, "https://"):
		return s.fromURL(ctx, strings.ReplaceAll(spec.Chart, APIPlaceholder, s.apiHost), spec, caBundle, user, password)
	case spec.Repo != "":
		return s.fromRepo(spec, caBundle, user, password)
	}
	if file, ok := s.staticFile(spec.Chart); ok {
		return fromFile(file)
	}
	return archive{}, invalid("chart %q: no repo is set, and there is no such file in %s", spec.Chart, s.staticDir)
}

func fromBytes(raw []byte, what string) (archive, error) {
	c, err := loader.LoadArchive(bytes.NewReader(raw))
	if err != nil {
		return archive{}, invalid("%s is not a chart archive: %v", what, err)
	}
	return archive{chart: c, raw: raw}, nil
}

func fromFile(file string) (archive, error) {
	f, err := os.Open(file)
	if err != nil {
		return archive{}, err
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, maxChart+1))
	if err != nil {
		return archive{}, err
	}
	if len(raw) > maxChart {
		return archive{}, invalid("chart %s is larger than %d MiB", file, maxChart>>20)
	}
	return fromBytes(raw, file)
}

// staticFile maps a chart name, or a path under StaticPrefix, to a file
// of the static directory; nothing outside it.
func (s *source) staticFile(name string) (string, bool) {
	name = strings.TrimPrefix(name, StaticPrefix)
	clean := path.Clean("/" + name)[1:]
	if clean == "" || clean != name {
		return "", false
	}
	file := filepath.Join(s.staticDir, filepath.FromSlash(clean))
	if fi, err := os.Stat(file); err != nil || !fi.Mode().IsRegular() {
		return "", false
	}
	return file, true
}

func (s *source) fromURL(ctx context.Context, raw string, spec Spec, caBundle []byte, user, password string) (archive, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return archive{}, invalid("chart URL %q: %v", raw, err)
	}
	// This server's own static charts are read from disk.
	if u.Host == s.apiHost && strings.HasPrefix(u.Path, StaticPrefix) {
		if file, ok := s.staticFile(u.Path); ok {
			return fromFile(file)
		}
		return archive{}, invalid("chart %s: no such file in %s", raw, s.staticDir)
	}
	pool := x509.NewCertPool()
	if len(caBundle) > 0 {
		pool.AppendCertsFromPEM(caBundle)
	} else if sys, err := x509.SystemCertPool(); err == nil {
		pool = sys
	}
	pool.AppendCertsFromPEM(s.serverCA)
	client := &http.Client{
		Timeout:   time.Minute,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, InsecureSkipVerify: spec.InsecureSkipTLSVerify}}, //nolint:gosec // the user's choice
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return archive{}, invalid("chart URL %q: %v", raw, err)
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	resp, err := client.Do(req)
	if err != nil {
		return archive{}, fmt.Errorf("download chart %s: %w", u.Redacted(), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return archive{}, fmt.Errorf("download chart %s: %s", u.Redacted(), resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxChart+1))
	if err != nil {
		return archive{}, fmt.Errorf("download chart %s: %w", u.Redacted(), err)
	}
	if len(data) > maxChart {
		return archive{}, invalid("chart %s is larger than %d MiB", u.Redacted(), maxChart>>20)
	}
	return fromBytes(data, "the chart at "+u.Redacted())
}

// fromRepo downloads chart (of version) from a Helm repository through
// Helm's own chart locator and cache.
func (s *source) fromRepo(spec Spec, caBundle []byte, user, password string) (archive, error) {
	settings := cli.New()
	settings.RepositoryCache = filepath.Join(s.helmHome, "cache")
	settings.RepositoryConfig = filepath.Join(s.helmHome, "repositories.yaml")
	settings.RegistryConfig = filepath.Join(s.helmHome, "registry.json")
	if err := os.MkdirAll(settings.RepositoryCache, 0o700); err != nil {
		return archive{}, err
	}
	opts := action.ChartPathOptions{
		RepoURL:               spec.Repo,
		Version:               spec.Version,
		InsecureSkipTLSverify: spec.InsecureSkipTLSVerify,
		PlainHTTP:             spec.PlainHTTP,
		Username:              user,
		Password:              password,
		PassCredentialsAll:    spec.AuthPassCredentials,
	}
	if len(caBundle) > 0 {
		f, err := os.CreateTemp(s.helmHome, "repo-ca-*.pem")
		if err != nil {
			return archive{}, err
		}
		defer os.Remove(f.Name())
		_, werr := f.Write(caBundle)
		if err := errors.Join(werr, f.Close()); err != nil {
			return archive{}, err
		}
		opts.CaFile = f.Name()
	}
	file, err := opts.LocateChart(spec.Chart, settings)
	if err != nil {
		return archive{}, fmt.Errorf("chart %q from %s: %w", spec.Chart, spec.Repo, err)
	}
	return fromFile(file)
}
