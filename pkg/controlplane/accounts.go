package controlplane

import (
	"context"
	"fmt"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/kubernetes/plugin/pkg/auth/authorizer/rbac/bootstrappolicy"
)

// controllerAccounts creates the kube-system service accounts the
// controllers run as (use-service-account-credentials), several at a time.
// The controller manager creates each one itself while it builds that
// controller, one after another and before it runs any, so on a first
// start node IPAM, and with it the node's pod CIDR, waited seconds for
// some forty API writes. The names are the subjects of upstream's own
// controller role bindings, which the apiserver grants.
func controllerAccounts(ctx context.Context, client kubernetes.Interface) error {
	accounts := client.CoreV1().ServiceAccounts(metav1.NamespaceSystem)
	have, err := accounts.List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list the controllers' service accounts: %w", err)
	}
	exists := map[string]bool{}
	for _, sa := range have.Items {
		exists[sa.Name] = true
	}
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for _, name := range controllerAccountNames() {
		if exists[name] {
			continue
		}
		g.Go(func() error {
			sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: metav1.NamespaceSystem}}
			if _, err := accounts.Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("create service account kube-system/%s: %w", name, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// controllerAccountNames are the kube-system service accounts bound by
// upstream's controller roles.
func controllerAccountNames() []string {
	var names []string
	for _, b := range bootstrappolicy.ControllerRoleBindings() {
		for _, s := range b.Subjects {
			if s.Kind == rbacv1.ServiceAccountKind && s.Namespace == metav1.NamespaceSystem {
				names = append(names, s.Name)
			}
		}
	}
	return names
}
