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
	"sync"
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
	// leading is held while the group runs. client-go returns from an
	// election before the group has stopped: the next term, and the end
	// of the election loop (so Stop), wait for it.
	leading sync.Mutex
	// client, if set, is used instead of one made from Config (tests).
	client kubernetes.Interface
}

func (e *Elected) Name() string { return "leader-election(" + e.Lease + ")" }

func (e *Elected) Start(ctx context.Context) error {
	client := e.client
	if client == nil {
		c, err := kubernetes.NewForConfig(e.Config)
		if err != nil {
			return err
		}
		client = c
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
			termCtx, giveUp := context.WithCancel(runCtx)
			leaderelection.RunOrDie(termCtx, leaderelection.LeaderElectionConfig{
				Lock:            lock,
				LeaseDuration:   15 * time.Second,
				RenewDeadline:   10 * time.Second,
				RetryPeriod:     2 * time.Second,
				ReleaseOnCancel: true,
				Name:            e.Lease,
				Callbacks: leaderelection.LeaderCallbacks{
					OnStartedLeading: func(lctx context.Context) {
						if !e.lead(ctx, lctx) {
							giveUp()
						}
					},
					OnStoppedLeading: func() {},
					OnNewLeader: func(id string) {
						if id != e.Identity {
							e.Log.Info("following", "lease", e.Lease, "leader", id)
						}
					},
				},
			})
			if termCtx.Err() != nil && runCtx.Err() == nil {
				// The group failed: another server may take the Lease
				// before this one runs for it again.
				select {
				case <-runCtx.Done():
				case <-time.After(retryDelay):
				}
			}
			giveUp()
		}
		// client-go returns before the group it started has stopped.
		e.leading.Lock()
		e.leading.Unlock() //nolint:staticcheck // an empty section: a wait, not a guard
	}()
	return nil
}

// retryDelay is how long a server whose group failed waits before it runs
// for the Lease again.
const retryDelay = 5 * time.Second

// lead runs the components until leadership ends (lctx) and stops them.
// A group that fails to start fails kedge, as it would without election:
// that is its configuration. One that fails once running (its datastore
// timed out, say) is stopped, and lead returns false: the server gives
// up the Lease and runs for it again, and stays up.
func (e *Elected) lead(outer, lctx context.Context) bool {
	e.leading.Lock()
	defer e.leading.Unlock()
	if lctx.Err() != nil {
		return true
	}
	e.Log.Info("leading: starting", "lease", e.Lease)
	running := false
	err := component.NewRunner(e.Log).Run(lctx, e.Components, func() { running = true })
	switch {
	case err == nil:
		e.Log.Info("no longer leading: stopped", "lease", e.Lease)
	case !running:
		component.Fail(outer, fmt.Errorf("%s: %w", e.Lease, err))
	default:
		e.Log.Error("failed while leading: stopped; giving up the Lease and running for it again", "lease", e.Lease, "err", err)
	}
	return err == nil
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
