package controlplane

import (
	"context"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestControllerAccounts(t *testing.T) {
	names := controllerAccountNames()
	// node-controller is node IPAM's: the one the node's lease waits for.
	for _, want := range []string{"node-controller", "daemon-set-controller", "service-account-controller"} {
		if !slices.Contains(names, want) {
			t.Errorf("%s missing from %v", want, names)
		}
	}
	existing := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "node-controller", Namespace: "kube-system", Labels: map[string]string{"kept": "yes"}}}
	client := fake.NewSimpleClientset(existing)
	if err := controllerAccounts(context.Background(), client); err != nil {
		t.Fatal(err)
	}
	list, err := client.CoreV1().ServiceAccounts("kube-system").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != len(names) {
		t.Errorf("%d service accounts, want %d", len(list.Items), len(names))
	}
	for _, sa := range list.Items {
		if sa.Name == "node-controller" && sa.Labels["kept"] != "yes" {
			t.Error("an existing account was replaced")
		}
	}
	// A second pass finds them all and writes nothing.
	if err := controllerAccounts(context.Background(), client); err != nil {
		t.Fatal(err)
	}
}
