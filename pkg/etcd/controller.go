package etcd

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	"github.com/kedge-dev/kedge/pkg/controller"
	"github.com/kedge-dev/kedge/pkg/pki"
)

// Node labels of servers, as k3s sets them.
const (
	LabelControlPlane = "node-role.kubernetes.io/control-plane"
	LabelEtcd         = "node-role.kubernetes.io/etcd"
)

// MemberController labels this server's Node as control plane and etcd
// member, and removes the etcd member of a server whose Node is deleted
// (kubectl delete node), so the cluster's quorum follows its servers.
type MemberController struct {
	Informers *controller.Informers
	NodeName  string
	TLS       pki.Files
	Log       *slog.Logger

	loop   *controller.Loop
	cancel context.CancelFunc
	done   chan struct{}
}

func (c *MemberController) Name() string { return "etcd-members" }

func (c *MemberController) Start(context.Context) error {
	inf := c.Informers.Typed.Core().V1().Nodes().Informer()
	c.loop = &controller.Loop{Name: "etcd-members", Reconcile: c.reconcile, Log: c.Log}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if n, ok := obj.(*corev1.Node); ok && n.Name == c.NodeName {
				c.loop.Add("label")
			}
		},
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if n, ok := obj.(*corev1.Node); ok && n.Labels[LabelEtcd] == "true" && n.Name != c.NodeName {
				c.loop.Add("remove/" + n.Name)
			}
		},
	}); err != nil {
		return err
	}
	c.Informers.Start()
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel, c.done = cancel, make(chan struct{})
	go func() {
		defer close(c.done)
		_ = c.loop.Run(ctx, 1, inf.HasSynced)
	}()
	return nil
}

func (c *MemberController) reconcile(ctx context.Context, key string) error {
	if key == "label" {
		patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]string{LabelControlPlane: "true", LabelEtcd: "true"}}})
		_, err := c.Informers.Client.CoreV1().Nodes().Patch(ctx, c.NodeName, types.MergePatchType, patch, metav1.PatchOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	}
	name := key[len("remove/"):]
	cli, err := NewClient(c.TLS, []string{ClientURL("127.0.0.1")})
	if err != nil {
		return err
	}
	defer cli.Close()
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	removed, err := Remove(rctx, cli, name)
	if err != nil {
		return err
	}
	if removed {
		c.Log.Info("removed the etcd member of a deleted server node", "member", name)
	}
	return nil
}

func (c *MemberController) Ready(context.Context) error { return c.loop.Ready() }

func (c *MemberController) Stop() error {
	if c.cancel != nil {
		c.cancel()
		<-c.done
	}
	return nil
}
