package join

import (
	"context"
	"log/slog"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/kedge-dev/kedge/pkg/controller"
)

// LocalNode registers the password of a server's own node, so that no
// other machine can join under the server's node name.
type LocalNode struct {
	Store    *Store
	Node     string
	AgentDir string
}

func (l *LocalNode) Name() string { return "node-password" }

func (l *LocalNode) Start(ctx context.Context) error {
	pw, err := NodePassword(l.AgentDir)
	if err != nil {
		return err
	}
	return l.Store.VerifyNodePassword(ctx, l.Node, pw)
}

func (l *LocalNode) Ready(context.Context) error { return nil }
func (l *LocalNode) Stop() error                 { return nil }

// PasswordCleaner deletes a node's password Secret when its Node is
// deleted: kubectl delete node frees the name for another machine.
type PasswordCleaner struct {
	Informers *controller.Informers
	Log       *slog.Logger

	loop   *controller.Loop
	cancel context.CancelFunc
	done   chan struct{}
}

func (p *PasswordCleaner) Name() string { return "node-password-cleanup" }

func (p *PasswordCleaner) Start(context.Context) error {
	inf := p.Informers.Typed.Core().V1().Nodes().Informer()
	p.loop = &controller.Loop{Name: "node-passwords", Log: p.Log, Reconcile: func(ctx context.Context, node string) error {
		err := p.Informers.Client.CoreV1().Secrets(metav1.NamespaceSystem).Delete(ctx, PasswordSecret(node), metav1.DeleteOptions{})
		if err == nil {
			p.Log.Info("node deleted: its node password is forgotten", "node", node)
		}
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	}}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{DeleteFunc: func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if n, ok := obj.(*corev1.Node); ok {
			p.loop.Add(n.Name)
		}
	}}); err != nil {
		return err
	}
	p.Informers.Start()
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel, p.done = cancel, make(chan struct{})
	go func() {
		defer close(p.done)
		_ = p.loop.Run(ctx, 1, inf.HasSynced)
	}()
	return nil
}

func (p *PasswordCleaner) Ready(context.Context) error { return p.loop.Ready() }

func (p *PasswordCleaner) Stop() error {
	if p.cancel != nil {
		p.cancel()
		<-p.done
	}
	return nil
}
