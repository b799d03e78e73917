package pki

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Cert describes one certificate file.
type Cert struct {
	Path     string
	Subject  string
	Issuer   string
	NotAfter time.Time
	CA       bool
}

// WarnBefore is how close to expiry a certificate gets a warning.
const WarnBefore = 30 * 24 * time.Hour

// Inspect lists the certificates (*.crt) under the dirs.
func Inspect(dirs ...string) []Cert {
	var out []Cert
	for _, dir := range dirs {
		filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			// *.nochain.crt repeat a CA's own certificate.
			if err != nil || d.IsDir() || !strings.HasSuffix(p, ".crt") || strings.HasSuffix(p, ".nochain.crt") {
				return nil
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return nil
			}
			c, err := parseCertPEM(data)
			if err != nil {
				return nil
			}
			out = append(out, Cert{Path: p, Subject: c.Subject.CommonName, Issuer: c.Issuer.CommonName, NotAfter: c.NotAfter, CA: c.IsCA})
			return nil
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// Renewer keeps the certificates fresh while kedge runs: once a day it
// reissues what is within 120 days of expiry (Ensure) and warns about
// anything within 30 days. The apiserver serves a renewed certificate at
// once; other components take theirs at their next start.
type Renewer struct {
	Ensure func() error
	Dirs   []string
	Log    *slog.Logger
	Every  time.Duration

	cancel context.CancelFunc
	done   chan struct{}
}

func (r *Renewer) Name() string { return "certificates" }

func (r *Renewer) Start(context.Context) error {
	r.check()
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan struct{})
	every := r.Every
	if every == 0 {
		every = 24 * time.Hour
	}
	go func() {
		defer close(r.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if r.Ensure != nil {
					if err := r.Ensure(); err != nil {
						r.Log.Error("renewing certificates", "err", err)
					}
				}
				r.check()
			}
		}
	}()
	return nil
}

func (r *Renewer) check() {
	for _, c := range Inspect(r.Dirs...) {
		if left := time.Until(c.NotAfter); left < WarnBefore {
			r.Log.Warn("certificate expires soon", "file", c.Path, "subject", c.Subject, "expires", c.NotAfter.UTC().Format(time.RFC3339), "days", int(left.Hours()/24), "fix", "kedge certificate rotate (leaves) or rotate the CA")
		}
	}
}

func (r *Renewer) Ready(context.Context) error { return nil }

func (r *Renewer) Stop() error {
	if r.cancel != nil {
		r.cancel()
		<-r.done
	}
	return nil
}
