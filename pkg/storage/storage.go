// Package storage is kedge's local-path storage: the provisioner behind the
// default StorageClass local-path, with no helper pod or image. Every
// agent runs one for its own node (sig-storage-lib-external-provisioner's
// controller, as CSI's distributed provisioning does): it creates a
// directory under --default-local-storage-path for each claim the
// scheduler placed on this node, returns a local PersistentVolume bound to
// the node, and removes the directory when a released volume's reclaim
// policy is Delete. Claims for other nodes are left to their own agents.
package storage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"
)

const (
	// ProvisionerName is the provisioner of the local-path StorageClass.
	ProvisionerName = "kedge.io/local-path"
	// AnnNode and AnnPath record on a volume where its directory lives.
	AnnNode = "storage.kedge.io/node"
	AnnPath = "storage.kedge.io/path"
)

// Provisioner is the node's provisioner component.
type Provisioner struct {
	Config   *rest.Config
	NodeName string
	// Dir holds one directory per volume of this node.
	Dir string
	Log *slog.Logger

	cancel context.CancelFunc
	done   chan struct{}
}

func (p *Provisioner) Name() string { return "local-storage" }

func (p *Provisioner) Start(context.Context) error {
	if err := os.MkdirAll(p.Dir, 0o700); err != nil {
		return fmt.Errorf("--default-local-storage-path %s: %w", p.Dir, err)
	}
	client, err := kubernetes.NewForConfig(p.Config)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	ctx = klog.NewContext(ctx, klog.Background().WithValues("component", "local-storage"))
	pc := controller.NewProvisionController(ctx, client, ProvisionerName,
		&volumes{node: p.NodeName, dir: p.Dir, log: p.Log},
		controller.LeaderElection(false), // one per node, each for its own node
		controller.Threadiness(2),
	)
	p.cancel, p.done = cancel, make(chan struct{})
	go func() {
		defer close(p.done)
		pc.Run(ctx)
	}()
	p.Log.Info("local-path provisioner", "node", p.NodeName, "dir", p.Dir)
	return nil
}

func (p *Provisioner) Ready(context.Context) error { return nil }

func (p *Provisioner) Stop() error {
	if p.cancel != nil {
		p.cancel()
		<-p.done
	}
	return nil
}

// volumes creates and removes this node's volume directories.
type volumes struct {
	node string
	dir  string
	log  *slog.Logger
}

var supportedModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce, corev1.ReadWriteOncePod}

// Provision makes the directory of a claim placed on this node.
func (v *volumes) Provision(_ context.Context, o controller.ProvisionOptions) (*corev1.PersistentVolume, controller.ProvisioningState, error) {
	if o.SelectedNodeName == "" {
		// Immediate binding: no node was chosen. A local volume must live
		// somewhere its pod can run, which only the scheduler knows.
		return nil, controller.ProvisioningFinished, &controller.IgnoredError{Reason: "no selected node"}
	}
	if o.SelectedNodeName != v.node {
		return nil, controller.ProvisioningFinished, &controller.IgnoredError{Reason: "claim placed on node " + o.SelectedNodeName}
	}
	if err := checkClaim(o.PVC); err != nil {
		// Infeasible: the library retries such claims only slowly.
		return nil, controller.ProvisioningFinished, infeasible{err}
	}
	want := o.PVC.Spec.Resources.Requests[corev1.ResourceStorage]
	free, err := freeBytes(v.dir)
	if err != nil {
		return nil, controller.ProvisioningNoChange, fmt.Errorf("local-path on node %s: %w", v.node, err)
	}
	if want.Value() > free {
		// Another node may have room: let the scheduler choose again.
		return nil, controller.ProvisioningReschedule, fmt.Errorf("not enough space on node %s: the claim asks for %s, %s has %s free",
			v.node, want.String(), v.dir, resource.NewQuantity(free, resource.BinarySI).String())
	}
	path := filepath.Join(v.dir, fmt.Sprintf("%s_%s_%s", o.PVName, o.PVC.Namespace, o.PVC.Name))
	if err := os.MkdirAll(path, 0o777); err != nil {
		return nil, controller.ProvisioningNoChange, fmt.Errorf("create %s on node %s: %w", path, v.node, err)
	}
	// World-writable, as k3s's local-path: a chart's non-root user must
	// be able to write; the umask must not narrow it.
	if err := os.Chmod(path, 0o777); err != nil {
		return nil, controller.ProvisioningNoChange, fmt.Errorf("chmod %s: %w", path, err)
	}
	reclaim := corev1.PersistentVolumeReclaimDelete
	if o.StorageClass.ReclaimPolicy != nil {
		reclaim = *o.StorageClass.ReclaimPolicy
	}
	fs := corev1.PersistentVolumeFilesystem
	v.log.Info("volume created", "pv", o.PVName, "claim", o.PVC.Namespace+"/"+o.PVC.Name, "path", path)
	return &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{
			Name:        o.PVName,
			Annotations: map[string]string{AnnNode: v.node, AnnPath: path},
		},
		Spec: corev1.PersistentVolumeSpec{
			PersistentVolumeReclaimPolicy: reclaim,
			AccessModes:                   o.PVC.Spec.AccessModes,
			VolumeMode:                    &fs,
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: want},
			MountOptions:                  o.StorageClass.MountOptions,
			PersistentVolumeSource: corev1.PersistentVolumeSource{
				Local: &corev1.LocalVolumeSource{Path: path},
			},
			// kedge registers nodes with their name as host name, which
			// is what the kubernetes.io/hostname label holds.
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{
				NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{{
					Key: corev1.LabelHostname, Operator: corev1.NodeSelectorOpIn, Values: []string{v.node},
				}}}},
			}},
		},
	}, controller.ProvisioningFinished, nil
}

// checkClaim refuses what a directory on one node cannot give.
func checkClaim(pvc *corev1.PersistentVolumeClaim) error {
	var errs []error
	for _, m := range pvc.Spec.AccessModes {
		if !slices.Contains(supportedModes, m) {
			errs = append(errs, fmt.Errorf("access mode %s is not supported: a local-path volume lives on one node (use ReadWriteOnce or ReadWriteOncePod)", m))
		}
	}
	if pvc.Spec.VolumeMode != nil && *pvc.Spec.VolumeMode == corev1.PersistentVolumeBlock {
		errs = append(errs, errors.New("volumeMode Block is not supported: a local-path volume is a directory (use Filesystem)"))
	}
	if pvc.Spec.Selector != nil {
		errs = append(errs, errors.New("a claim with a selector cannot be provisioned dynamically"))
	}
	return errors.Join(errs...)
}

// Delete removes the directory of a released volume of this node.
func (v *volumes) Delete(_ context.Context, pv *corev1.PersistentVolume) error {
	if pv.Annotations[AnnNode] != v.node {
		return &controller.IgnoredError{Reason: "volume of node " + pv.Annotations[AnnNode]}
	}
	path := pv.Annotations[AnnPath]
	if pv.Spec.Local != nil {
		path = pv.Spec.Local.Path
	}
	// Never remove anything but a volume directory directly under ours.
	if filepath.Dir(path) != filepath.Clean(v.dir) || !strings.HasPrefix(filepath.Base(path), pv.Name+"_") {
		return fmt.Errorf("volume %s: path %q is not a local-path directory under %s; not removing it", pv.Name, path, v.dir)
	}
	if err := os.RemoveAll(path); err != nil {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	v.log.Info("volume removed", "pv", pv.Name, "path", path)
	return nil
}

// infeasible is a claim no retry can satisfy; the library recognises it
// by its gRPC status (InvalidArgument) and retries only slowly.
type infeasible struct{ error }

func (e infeasible) GRPCStatus() *status.Status { return status.New(codes.InvalidArgument, e.Error()) }

func freeBytes(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}
