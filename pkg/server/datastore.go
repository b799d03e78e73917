package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kedge-dev/kedge/pkg/bootstrap"
	"github.com/kedge-dev/kedge/pkg/component"
	"github.com/kedge-dev/kedge/pkg/config"
	"github.com/kedge-dev/kedge/pkg/datadir"
	"github.com/kedge-dev/kedge/pkg/datastore"
	"github.com/kedge-dev/kedge/pkg/etcd"
	"github.com/kedge-dev/kedge/pkg/join"
	"github.com/kedge-dev/kedge/pkg/pki"
)

// storeMode is what holds the cluster's state.
type storeMode int

const (
	storeSQLite   storeMode = iota // kine on the local SQLite file
	storeExternal                  // kine on --datastore-endpoint
	storeEtcd                      // embedded etcd
)

// store is the datastore decision of one start.
type store struct {
	mode storeMode
	// join: this server becomes a member of cfg.Server's etcd cluster.
	join bool
	// migrate: the SQLite database moves into the new etcd.
	migrate bool
}

func etcdDir(l datadir.Layout) string { return filepath.Join(l.DBDir(), "etcd") }

// planStore decides the datastore, before anything is written: a server
// that has etcd data keeps running etcd; --cluster-init and --server ask
// for it; an external endpoint is kine's.
func planStore(cfg config.Config, l datadir.Layout) (store, error) {
	hasEtcd := etcd.HasData(etcdDir(l))
	switch {
	case cfg.DatastoreEndpoint != "":
		if hasEtcd {
			return store{}, fmt.Errorf("--datastore-endpoint: this server runs embedded etcd (%s); it cannot move to an external datastore", etcdDir(l))
		}
		return store{mode: storeExternal}, nil
	case hasEtcd:
		return store{mode: storeEtcd}, nil
	case cfg.Server != "":
		if sqliteHasData(l.DBFile()) {
			return store{}, fmt.Errorf("--server: this server has its own SQLite cluster (%s); it cannot join another cluster's etcd with it: move the data dir away first", l.DBFile())
		}
		return store{mode: storeEtcd, join: true}, nil
	case cfg.ClusterInit:
		if err := datastore.CheckSQLiteFile(l.DBFile()); err != nil {
			return store{}, err
		}
		return store{mode: storeEtcd, migrate: etcd.Pending(l.DBFile())}, nil
	}
	if err := datastore.CheckSQLiteFile(l.DBFile()); err != nil {
		return store{}, err
	}
	return store{mode: storeSQLite}, nil
}

func sqliteHasData(file string) bool {
	fi, err := os.Stat(file)
	return err == nil && fi.Size() > 0
}

// shareBootstrap makes the TLS dir hold the cluster's shared material
// before the PKI is completed: from the member a joining server names, or
// from the external datastore. ensure completes the PKI.
func shareBootstrap(ctx context.Context, cfg config.Config, l datadir.Layout, st store, remote *join.Remote, ensure func() error, log *slog.Logger) error {
	switch {
	case st.join:
		if err := remote.Bootstrap(ctx); err != nil {
			return err
		}
		b, err := bootstrap.Fetch(ctx, remote)
		if err != nil {
			return err
		}
		if err := b.Install(l.TLSDir()); err != nil {
			return err
		}
		return ensure()
	case st.mode == storeExternal:
		secret, err := tokenSecret(cfg, l)
		if err != nil {
			return err
		}
		opts := datastore.Options{Endpoint: cfg.DatastoreEndpoint, Socket: l.KineSocket(), Log: log.With("component", "kine")}
		return datastore.Peek(ctx, opts, func(cli *clientv3.Client) error {
			return bootstrap.Sync(ctx, bootstrap.EtcdKV{Client: cli}, secret, l.TLSDir(), ensure)
		})
	}
	return ensure()
}

// tokenSecret is the secret of --token, else of the stored token: servers
// on one external datastore must share it.
func tokenSecret(cfg config.Config, l datadir.Layout) (string, error) {
	given := cfg.Token
	if given == "" {
		data, err := os.ReadFile(l.TokenFile())
		if err != nil {
			return "", errors.New("--datastore-endpoint needs --token: every server on one datastore must be started with the same --token")
		}
		given = strings.TrimSpace(string(data))
	}
	t, err := join.Parse(given)
	if err != nil {
		return "", fmt.Errorf("--token: %w", err)
	}
	return t.Secret, nil
}

// datastorePlan is what serves the apiserver's storage.
type datastorePlan struct {
	components []component.Component
	endpoints  func() []string
	// etcdTLS: the endpoints need kedge's etcd client certificate.
	etcdTLS bool
	// overrides are --etcd-servers-overrides: resources stored elsewhere.
	overrides func() []string
}

// ephemeralResources live in a second SQLite database in the run dir
// (tmpfs on most systems) on a single SQLite server: they are written all
// the time (every node renews its Lease every 10 s, every change makes
// Events, the apiserver renews its own address leases every 10 s: the
// storage groups apiServerIPInfo and apiServerPeerIPInfo) and are worth
// nothing after a power cut, so they need not wear the flash. With more
// servers they stay in the shared datastore: leader election and the
// kubernetes Service's endpoints need what every server sees.
var ephemeralResources = []string{"/events", "coordination.k8s.io/leases", "/apiServerIPInfo", "/apiServerPeerIPInfo"}

// datastoreComponents plans the datastore (and a migration into it).
func datastoreComponents(ctx context.Context, cfg config.Config, l datadir.Layout, st store, f pki.Files, remote *join.Remote, name, ip string, log *slog.Logger) (datastorePlan, error) {
	none := func() []string { return nil }
	if st.mode != storeEtcd {
		k := datastore.New(datastore.Options{
			Endpoint: cfg.DatastoreEndpoint,
			DBFile:   l.DBFile(),
			Socket:   l.KineSocket(),
			Log:      log.With("component", "kine"),
		})
		plan := datastorePlan{components: []component.Component{k}, endpoints: k.Endpoints, overrides: none}
		if st.mode == storeSQLite {
			dir := filepath.Join(cfg.RunDir, "db")
			eph := datastore.New(datastore.Options{
				DBFile: filepath.Join(dir, "ephemeral.db"),
				Socket: filepath.Join(dir, "ephemeral.sock"),
				Name:   "kine-ephemeral",
				Log:    log.With("component", "kine-ephemeral"),
			})
			plan.components = append(plan.components, eph)
			plan.overrides = func() []string {
				var out []string
				for _, r := range ephemeralResources {
					out = append(out, r+"#"+strings.Join(eph.Endpoints(), ";"))
				}
				return out
			}
		}
		return plan, nil
	}
	o := etcd.Options{Name: name, Dir: etcdDir(l), IP: ip, TLS: f, Log: log.With("component", "etcd"), Verbose: cfg.Verbosity >= 2}
	if st.join {
		cluster, err := etcd.Join(ctx, remote, name, ip, log.With("component", "etcd"))
		if err != nil {
			return datastorePlan{}, err
		}
		o.InitialCluster, o.State = cluster, "existing"
		log.Info("joining the etcd cluster", "server", cfg.Server, "cluster", cluster)
	}
	m := etcd.New(o)
	comps := []component.Component{m}
	if st.migrate {
		comps = append(comps, &etcd.Migrate{DBFile: l.DBFile(), Socket: l.KineSocket(), TLS: f, Log: log.With("component", "etcd")})
	}
	return datastorePlan{components: comps, endpoints: m.Endpoints, etcdTLS: true, overrides: none}, nil
}

// resetCluster is --cluster-reset: this member becomes a cluster of one,
// from a snapshot if --cluster-reset-restore-path names one.
func resetCluster(ctx context.Context, cfg config.Config, l datadir.Layout, f pki.Files, name, ip string, log *slog.Logger) error {
	dir := etcdDir(l)
	elog := log.With("component", "etcd")
	if cfg.ClusterResetRestorePath != "" {
		old, err := etcd.Restore(cfg.ClusterResetRestorePath, dir, name, ip, elog)
		if err != nil {
			return err
		}
		log.Info("restored the etcd snapshot", "snapshot", cfg.ClusterResetRestorePath, "previous data", old)
	} else if !etcd.HasData(dir) {
		return fmt.Errorf("--cluster-reset: %s holds no etcd data (this server does not run embedded etcd)", dir)
	}
	m := etcd.New(etcd.Options{Name: name, Dir: dir, IP: ip, TLS: f, ForceNewCluster: true, Log: elog})
	err := component.NewRunner(log).Run(ctx, []component.Component{m, doneComponent{}}, nil)
	if err != nil {
		return err
	}
	log.Info("etcd is now a cluster of one member: restart kedge without --cluster-reset; other servers must rejoin with their etcd data removed", "member", name)
	return nil
}

// doneComponent ends a run as soon as it starts: the runner then stops
// what came before it, in order.
type doneComponent struct{}

func (doneComponent) Name() string { return "done" }
func (doneComponent) Start(ctx context.Context) error {
	component.Fail(ctx, component.ErrStopped)
	return nil
}
func (doneComponent) Ready(context.Context) error { return nil }
func (doneComponent) Stop() error                 { return nil }
