package addons

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/kedge-dev/kedge/manifests"
)

func TestRenderCoreDNS(t *testing.T) {
	data, err := Render(manifests.FS, "coredns.yaml", Values{ClusterDNS: "10.99.0.10", ClusterDomain: "edge.local", CoreDNSImage: "kedge.local/coredns:test"})
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, o := range objs {
		kinds = append(kinds, o.GetKind())
		switch o.GetKind() {
		case "Service":
			if ip, _, _ := unstructured.NestedString(o.Object, "spec", "clusterIP"); ip != "10.99.0.10" {
				t.Errorf("kube-dns clusterIP %q", ip)
			}
		case "ConfigMap":
			if cf, _, _ := unstructured.NestedString(o.Object, "data", "Corefile"); !strings.Contains(cf, "kubernetes edge.local in-addr.arpa") {
				t.Errorf("Corefile does not serve the cluster domain:\n%s", cf)
			}
		}
	}
	if got := strings.Join(kinds, ","); got != "ServiceAccount,ClusterRole,ClusterRoleBinding,ConfigMap,Deployment,DaemonSet,Service" {
		t.Fatalf("objects: %s", got)
	}
	if !strings.Contains(string(data), "image: kedge.local/coredns:test") {
		t.Fatal("the image value is not used")
	}
}

func TestDecodeErrors(t *testing.T) {
	for name, doc := range map[string]string{
		"no kind":  "apiVersion: v1\nmetadata: {name: x}\n",
		"no name":  "apiVersion: v1\nkind: ConfigMap\n",
		"not yaml": "a: [b\n",
	} {
		if _, err := Decode([]byte(doc)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	objs, err := Decode([]byte("---\n# only a comment\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"))
	if err != nil || len(objs) != 1 {
		t.Fatalf("empty documents: %v %v", objs, err)
	}
}
