// Package datastore runs kine, the etcd API shim, in-process: SQLite in the
// data dir by default, or any kine endpoint given by --datastore-endpoint.
// The apiserver reaches it on a 0600 unix socket.
package datastore

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/k3s-io/kine/pkg/endpoint"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// Options configure the datastore.
type Options struct {
	// Endpoint is a kine endpoint; empty means SQLite at DBFile.
	Endpoint string
	DBFile   string
	Socket   string
	// Name is the component's name (default kine).
	Name string
	Log  *slog.Logger
}

// Kine is the datastore component.
type Kine struct {
	opts      Options
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	endpoints []string
}

// New returns the datastore component.
func New(o Options) *Kine { return &Kine{opts: o} }

func (k *Kine) Name() string {
	if k.opts.Name != "" {
		return k.opts.Name
	}
	return "kine"
}

// Endpoints are the etcd endpoints the apiserver should use.
func (k *Kine) Endpoints() []string { return k.endpoints }

func (k *Kine) Start(_ context.Context) error {
	ep := k.opts.Endpoint
	if ep == "" {
		if err := CheckSQLiteFile(k.opts.DBFile); err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(k.opts.DBFile), 0o700); err != nil {
			return fmt.Errorf("database dir: %w", err)
		}
		// SQLite gives its WAL and shared-memory files the database's
		// mode: 0600, readable by root alone.
		if f, err := os.OpenFile(k.opts.DBFile, os.O_CREATE|os.O_RDONLY, 0o600); err == nil {
			f.Close()
		}
		if err := os.Chmod(k.opts.DBFile, 0o600); err != nil {
			return fmt.Errorf("database %s: %w", k.opts.DBFile, err)
		}
		ep = "sqlite://" + k.opts.DBFile + "?" + sqliteParams
	}
	ctx, cancel := context.WithCancel(context.Background())
	k.cancel = cancel
	cfg := endpoint.Config{
		Listener:  "unix://" + k.opts.Socket,
		Endpoint:  ep,
		WaitGroup: &k.wg,
		// kine has no usable zero values: every interval and batch size is
		// set here (PollInterval 0 silently breaks every watch).
		NotifyInterval:      5 * time.Second,
		EmulatedETCDVersion: "3.5.13",
		CompactInterval:     5 * time.Minute,
		CompactTimeout:      5 * time.Second,
		CompactMinRetain:    1000,
		CompactBatchSize:    1000,
		PollBatchSize:       500,
		PollInterval:        pollInterval(k.opts.Endpoint),
	}
	etcd, err := endpoint.Listen(ctx, cfg)
	if err != nil {
		cancel()
		return fmt.Errorf("kine on %s: %w", describe(k.opts), err)
	}
	k.endpoints = etcd.Endpoints
	if len(k.endpoints) == 0 || strings.HasPrefix(k.endpoints[0], "unix://") || k.endpoints[0] == "" {
		k.endpoints = []string{"unix://" + k.opts.Socket}
	}
	k.opts.Log.Info("datastore listening", "backend", describe(k.opts), "socket", k.opts.Socket)
	return nil
}

// pollInterval is how often kine looks for rows it did not write itself.
// On SQLite every write comes through this kine, which wakes its poll loop
// at once, so a slow poll is only a safety net and spares an idle CPU; an
// external datastore has other servers' writes to find.
func pollInterval(endpoint string) time.Duration {
	if endpoint == "" {
		return 10 * time.Second
	}
	return time.Second
}

// sqliteParams are kine's defaults for SQLite: WAL with NORMAL sync keeps
// SD-card writes low while a process crash loses nothing committed.
const sqliteParams = "_journal_mode=WAL&_busy_timeout=30000&_synchronous=NORMAL&_txlock=immediate&_stmt_cache_size=20&cache=shared"

func describe(o Options) string {
	if o.Endpoint == "" {
		return "sqlite " + o.DBFile
	}
	scheme, _, _ := strings.Cut(o.Endpoint, "://")
	return scheme + " (--datastore-endpoint)"
}

// Ready writes a key and reads it back through the etcd API.
func (k *Kine) Ready(ctx context.Context) error {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   k.endpoints,
		DialTimeout: 2 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithBlock()},
		Logger:      nil,
	})
	if err != nil {
		return fmt.Errorf("connect to kine: %w", err)
	}
	defer cli.Close()
	const key = "/kedge/health"
	want := time.Now().UTC().Format(time.RFC3339Nano)
	if _, err := cli.Put(ctx, key, want); err != nil {
		return fmt.Errorf("kine put: %w", err)
	}
	resp, err := cli.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("kine get: %w", err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != want {
		return fmt.Errorf("kine get returned %d values, not the one written", len(resp.Kvs))
	}
	return nil
}

// Stop stops serving and closes the database, waiting for kine's
// goroutines (including the one that closes the database) to finish.
func (k *Kine) Stop() error {
	if k.cancel == nil {
		return nil
	}
	k.cancel()
	done := make(chan struct{})
	go func() { k.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("kine did not close the database within 10s")
	}
}

// Peek starts kine on the datastore for as long as f runs, on a socket of
// its own: what a server reads and writes before the control plane starts
// (the cluster's bootstrap data, pkg/bootstrap).
func Peek(ctx context.Context, o Options, f func(*clientv3.Client) error) error {
	o.Socket += ".boot"
	k := New(o)
	if err := k.Start(ctx); err != nil {
		return err
	}
	defer k.Stop()
	cli, err := clientv3.New(clientv3.Config{Endpoints: k.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return fmt.Errorf("connect to kine: %w", err)
	}
	defer cli.Close()
	return f(cli)
}
