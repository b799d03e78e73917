package storage

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"
)

func claim(modes []corev1.PersistentVolumeAccessMode, size string) *corev1.PersistentVolumeClaim {
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "data", Namespace: "apps"},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: modes,
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)}},
		},
	}
}

func TestProvisionAndDelete(t *testing.T) {
	dir := t.TempDir()
	v := &volumes{node: "n1", dir: dir, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	retain := corev1.PersistentVolumeReclaimRetain
	class := &storagev1.StorageClass{ReclaimPolicy: &retain}
	rwo := []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}

	tests := []struct {
		name     string
		node     string
		pvc      *corev1.PersistentVolumeClaim
		state    controller.ProvisioningState
		ignored  bool
		errSub   string
		provided bool
	}{
		{name: "this node", node: "n1", pvc: claim(rwo, "1Mi"), state: controller.ProvisioningFinished, provided: true},
		{name: "another node", node: "n2", pvc: claim(rwo, "1Mi"), state: controller.ProvisioningFinished, ignored: true},
		{name: "no node (Immediate)", node: "", pvc: claim(rwo, "1Mi"), state: controller.ProvisioningFinished, ignored: true},
		{name: "ReadWriteMany", node: "n1", pvc: claim([]corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}, "1Mi"), state: controller.ProvisioningFinished, errSub: "access mode ReadWriteMany is not supported"},
		{name: "too large", node: "n1", pvc: claim(rwo, "900Pi"), state: controller.ProvisioningReschedule, errSub: "not enough space on node n1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pv, state, err := v.Provision(context.Background(), controller.ProvisionOptions{StorageClass: class, PVName: "pvc-1", PVC: tt.pvc, SelectedNodeName: tt.node})
			if state != tt.state {
				t.Errorf("state %s, want %s", state, tt.state)
			}
			var ign *controller.IgnoredError
			if errors.As(err, &ign) != tt.ignored {
				t.Errorf("ignored: %v", err)
			}
			if tt.errSub != "" && (err == nil || !strings.Contains(err.Error(), tt.errSub)) {
				t.Errorf("error %v, want %q", err, tt.errSub)
			}
			if !tt.provided {
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "pvc-1_apps_data")
			if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o777 {
				t.Fatalf("volume dir: %v %v", fi, err)
			}
			if pv.Spec.Local.Path != path || pv.Spec.PersistentVolumeReclaimPolicy != retain || pv.Annotations[AnnNode] != "n1" {
				t.Fatalf("pv: %+v", pv)
			}
			if got := pv.Spec.NodeAffinity.Required.NodeSelectorTerms[0].MatchExpressions[0].Values; len(got) != 1 || got[0] != "n1" {
				t.Fatalf("node affinity %v", got)
			}
			// Another node's agent leaves it alone; this node's removes it.
			other := &volumes{node: "n2", dir: dir, log: v.log}
			var ign2 *controller.IgnoredError
			if err := other.Delete(context.Background(), pv); !errors.As(err, &ign2) {
				t.Fatalf("delete on another node: %v", err)
			}
			if err := v.Delete(context.Background(), pv); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(path); !os.IsNotExist(err) {
				t.Fatalf("volume dir not removed: %v", err)
			}
		})
	}
}

func TestDeleteRefusesForeignPaths(t *testing.T) {
	dir := t.TempDir()
	v := &volumes{node: "n1", dir: dir, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	victim := t.TempDir()
	for _, path := range []string{victim, filepath.Join(dir, "other_dir"), dir} {
		pv := &corev1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: "pvc-1", Annotations: map[string]string{AnnNode: "n1", AnnPath: path}},
			Spec:       corev1.PersistentVolumeSpec{PersistentVolumeSource: corev1.PersistentVolumeSource{Local: &corev1.LocalVolumeSource{Path: path}}},
		}
		if err := v.Delete(context.Background(), pv); err == nil {
			t.Errorf("deleted %s", path)
		}
	}
	if _, err := os.Stat(victim); err != nil {
		t.Fatal(err)
	}
}
