// Package autonomy keeps the pods of an autonomous node where they are
// while the node cannot reach a server. Such a node carries the label
// kedge.io/autonomy=true (kedge agent --autonomy sets it; a user may set
// it too). On the server, Controller makes every pod bound to such a node
// tolerate the node.kubernetes.io/unreachable and not-ready taints for
// ever, so the node lifecycle controller does not evict them and their
// controllers do not start replacements elsewhere. A pod annotated
// kedge.io/autonomy=false keeps the upstream behaviour. The controller
// also labels such nodes for kubectl get nodes: the role "autonomous",
// and, while the node is not Ready, its last heartbeat.
//
// Tolerations are added once a pod is bound, not at admission: the node
// is not known before, and the API lets a pod's tolerations grow (and
// their tolerationSeconds change) after creation.
package autonomy

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/kedge-dev/kedge/pkg/controller"
)

// Label marks an autonomous node; Annotation "false" on a pod opts it out.
const (
	Label      = "kedge.io/autonomy"
	Annotation = "kedge.io/autonomy"
)

// Taints the pods of an autonomous node tolerate without a time limit.
var Taints = []string{corev1.TaintNodeUnreachable, corev1.TaintNodeNotReady}

// Tolerations returns tolerations with the node-lifecycle ones made
// unlimited (added when missing), and whether anything changed.
func Tolerations(in []corev1.Toleration) ([]corev1.Toleration, bool) {
	out := make([]corev1.Toleration, 0, len(in)+len(Taints))
	changed := false
	for _, key := range Taints {
		found := false
		for _, t := range in {
			if t.Key == key && t.Operator == corev1.TolerationOpExists && (t.Effect == corev1.TaintEffectNoExecute || t.Effect == "") {
				found = true
			}
		}
		if !found {
			in = append(in, corev1.Toleration{Key: key, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute})
			changed = true
		}
	}
	for _, t := range in {
		for _, key := range Taints {
			if t.Key == key && t.TolerationSeconds != nil && (t.Effect == corev1.TaintEffectNoExecute || t.Effect == "") {
				t.TolerationSeconds = nil
				changed = true
			}
		}
		out = append(out, t)
	}
	return out, changed
}

// Controller adds the tolerations to the pods of autonomous nodes.
type Controller struct {
	Informers *controller.Informers
	Log       *slog.Logger

	loop   *controller.Loop
	cancel context.CancelFunc
	done   chan struct{}
}

func (c *Controller) Name() string { return "autonomy" }

func (c *Controller) Start(context.Context) error {
	pods := c.Informers.Typed.Core().V1().Pods()
	nodes := c.Informers.Typed.Core().V1().Nodes()
	c.loop = &controller.Loop{Name: "autonomy", Log: c.Log, Reconcile: func(ctx context.Context, key string) error {
		if node, ok := strings.CutPrefix(key, nodeKey); ok {
			return c.nodeLabels(ctx, nodes.Lister().Get, node)
		}
		ns, name, err := cache.SplitMetaNamespaceKey(key)
		if err != nil {
			return nil
		}
		pod, err := pods.Lister().Pods(ns).Get(name)
		if apierrors.IsNotFound(err) {
			return nil
		} else if err != nil {
			return err
		}
		if pod.Spec.NodeName == "" || pod.DeletionTimestamp != nil || pod.Annotations[Annotation] == "false" {
			return nil
		}
		node, err := nodes.Lister().Get(pod.Spec.NodeName)
		if err != nil || node.Labels[Label] != "true" {
			return nil
		}
		tol, changed := Tolerations(pod.Spec.Tolerations)
		if !changed {
			return nil
		}
		patch, err := json.Marshal(map[string]any{"spec": map[string]any{"tolerations": tol}})
		if err != nil {
			return err
		}
		_, err = c.Informers.Client.CoreV1().Pods(ns).Patch(ctx, name, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
		if err == nil {
			c.Log.Info("pod of an autonomous node: it stays while the node is unreachable", "pod", key, "node", node.Name)
		}
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	}}
	if _, err := pods.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { c.addPod(obj) },
		UpdateFunc: func(_, obj any) { c.addPod(obj) },
	}); err != nil {
		return err
	}
	if _, err := nodes.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { c.addNode(obj, pods.Lister().List) },
		UpdateFunc: func(old, obj any) {
			if n, ok := obj.(*corev1.Node); ok && n.Labels[Label] == "true" {
				c.loop.Add(nodeKey + n.Name)
			}
			if o, ok := old.(*corev1.Node); ok && o.Labels[Label] == "true" {
				return
			}
			c.addNode(obj, pods.Lister().List)
		},
	}); err != nil {
		return err
	}
	c.Informers.Start()
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel, c.done = cancel, make(chan struct{})
	go func() {
		defer close(c.done)
		_ = c.loop.Run(ctx, 1, pods.Informer().HasSynced, nodes.Informer().HasSynced)
	}()
	return nil
}

func (c *Controller) addPod(obj any) {
	if p, ok := obj.(*corev1.Pod); ok && p.Spec.NodeName != "" {
		if key, err := cache.MetaNamespaceKeyFunc(p); err == nil {
			c.loop.Add(key)
		}
	}
}

// nodeKey prefixes the queue keys of nodes (pods are namespace/name).
const nodeKey = "node:"

// Labels that show an autonomous node in kubectl get nodes: its role
// (the ROLES column), and, while it is not Ready, its last heartbeat
// (kubectl get nodes -L kedge.io/last-contact), removed once it is back.
const (
	RoleLabel        = "node-role.kubernetes.io/autonomous"
	LastContactLabel = "kedge.io/last-contact"
)

func (c *Controller) nodeLabels(ctx context.Context, get func(string) (*corev1.Node, error), name string) error {
	node, err := get(name)
	if err != nil || node.Labels[Label] != "true" {
		return nil
	}
	want := map[string]any{}
	if _, ok := node.Labels[RoleLabel]; !ok {
		want[RoleLabel] = ""
	}
	last := ""
	for _, cond := range node.Status.Conditions {
		if cond.Type == corev1.NodeReady && cond.Status != corev1.ConditionTrue && !cond.LastHeartbeatTime.IsZero() {
			// A label value holds no colons.
			last = cond.LastHeartbeatTime.UTC().Format("2006-01-02T15.04.05Z")
		}
	}
	if cur, ok := node.Labels[LastContactLabel]; last == "" && ok {
		want[LastContactLabel] = nil
	} else if last != "" && cur != last {
		want[LastContactLabel] = last
	}
	if len(want) == 0 {
		return nil
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": want}})
	_, err = c.Informers.Client.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// addNode queues the pods of a node that has just become autonomous.
func (c *Controller) addNode(obj any, list func(labels.Selector) ([]*corev1.Pod, error)) {
	n, ok := obj.(*corev1.Node)
	if !ok || n.Labels[Label] != "true" {
		return
	}
	c.loop.Add(nodeKey + n.Name)
	pods, _ := list(labels.Everything())
	for _, p := range pods {
		if p.Spec.NodeName == n.Name {
			c.addPod(p)
		}
	}
}

func (c *Controller) Ready(context.Context) error { return c.loop.Ready() }

func (c *Controller) Stop() error {
	if c.cancel != nil {
		c.cancel()
		<-c.done
	}
	return nil
}

// NodeLabel labels an autonomous agent's Node, for a node that registered
// before --autonomy was given (the kubelet's --node-labels apply only at
// registration). It retries in the background until the API answers.
type NodeLabel struct {
	Client kubernetes.Interface
	Node   string
	Log    *slog.Logger

	cancel context.CancelFunc
	done   chan struct{}
}

func (n *NodeLabel) Name() string { return "autonomy-label" }

func (n *NodeLabel) Start(context.Context) error {
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel, n.done = cancel, make(chan struct{})
	go func() {
		defer close(n.done)
		for {
			node, err := n.Client.CoreV1().Nodes().Get(ctx, n.Node, metav1.GetOptions{})
			if err == nil && node.Labels[Label] == "true" {
				return
			}
			if err == nil {
				patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]string{Label: "true"}}})
				if _, err = n.Client.CoreV1().Nodes().Patch(ctx, n.Node, types.MergePatchType, patch, metav1.PatchOptions{}); err == nil {
					n.Log.Info("node labelled autonomous", "node", n.Node, "label", Label+"=true")
					return
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(10 * time.Second):
			}
		}
	}()
	return nil
}

func (n *NodeLabel) Ready(context.Context) error { return nil }

func (n *NodeLabel) Stop() error {
	if n.cancel != nil {
		n.cancel()
		<-n.done
	}
	return nil
}
