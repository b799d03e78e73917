// Package leader runs components only on the server that holds a Lease,
// when more than one server can run: kube-controller-manager, kube-scheduler
// and kedge's cluster-wide controllers (add-ons, servicelb, ingress,
// HelmChart), each group under its own Lease. The others wait, ready, and
// take over within the lease duration when the leader goes. A server that
// loses its Lease stops the group and runs for it again.
package leader

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/kedge-dev/kedge/pkg/component"
)

// Elected is a group of components run while this server leads.
type Elected struct {
	Config *rest.Config
	// Lease names the Lease in kube-system.
	Lease string
	// Identity is this server's name in the Lease.
	Identity   string
	Components []component.Component
	Log        *slog.Logger

	cancel context.CancelFunc
	done   chan struct{}
}

func (e *Elected) Name() string { return "leader-election(" + e.Lease + ")" }

func (e *Elected) Start(ctx context.Context) error {
	client, err := kubernetes.NewForConfig(e.Config)
	if err != nil {
		return err
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: "kube-system", Name: e.Lease},
		Client:     client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: e.Identity},
	}
	runCtx, cancel := context.WithCancel(context.Background())
	e.cancel, e.done = cancel, make(chan struct{})
	go func() {
		defer close(e.done)
		for runCtx.Err() == nil {
			leaderelection.RunOrDie(runCtx, leaderelection.LeaderElectionConfig{
				Lock:            lock,
				LeaseDuration:   15 * time.Second,
				RenewDeadline:   10 * time.Second,
				RetryPeriod:     2 * time.Second,
				ReleaseOnCancel: true,
				Name:            e.Lease,
				Callbacks: leaderelection.LeaderCallbacks{
					OnStartedLeading: func(lctx context.Context) { e.lead(ctx, lctx) },
					OnStoppedLeading: func() {},
					OnNewLeader: func(id string) {
						if id != e.Identity {
							e.Log.Info("following", "lease", e.Lease, "leader", id)
						}
					},
				},
			})
		}
	}()
	return nil
}

// lead runs the components until leadership ends (lctx) and stops them.
// A component failing fails kedge, as it would without election.
func (e *Elected) lead(outer, lctx context.Context) {
	e.Log.Info("leading: starting", "lease", e.Lease)
	if err := component.NewRunner(e.Log).Run(lctx, e.Components, nil); err != nil {
		component.Fail(outer, fmt.Errorf("%s: %w", e.Lease, err))
	}
	e.Log.Info("no longer leading: stopped", "lease", e.Lease)
}

// Ready: a follower is ready too.
func (e *Elected) Ready(context.Context) error { return nil }

func (e *Elected) Stop() error {
	if e.cancel == nil {
		return nil
	}
	e.cancel()
	select {
	case <-e.done:
		return nil
	case <-time.After(40 * time.Second):
		return fmt.Errorf("%s: controllers did not stop within 40s", e.Lease)
	}
}
