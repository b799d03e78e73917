package helmchart

import (
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The resources, as k3s's helm-controller defines them.
var (
	ChartResource  = schema.GroupVersionResource{Group: "helm.cattle.io", Version: "v1", Resource: "helmcharts"}
	ConfigResource = schema.GroupVersionResource{Group: "helm.cattle.io", Version: "v1", Resource: "helmchartconfigs"}
)

// Finalizer holds a HelmChart until its release is uninstalled.
const Finalizer = "helm.cattle.io/kedge-uninstall"

// Spec is what kedge reads of a HelmChart's spec. Fields k3s has for its
// job pod (jobImage, helmVersion, backOffLimit, bootstrap, ...) are
// accepted by the CRD and ignored.
type Spec struct {
	Chart                 string                        `json:"chart,omitempty"`
	Version               string                        `json:"version,omitempty"`
	Repo                  string                        `json:"repo,omitempty"`
	RepoCA                string                        `json:"repoCA,omitempty"`
	RepoCAConfigMap       *NameRef                      `json:"repoCAConfigMap,omitempty"`
	TargetNamespace       string                        `json:"targetNamespace,omitempty"`
	CreateNamespace       bool                          `json:"createNamespace,omitempty"`
	ValuesContent         string                        `json:"valuesContent,omitempty"`
	ValuesSecrets         []SecretValues                `json:"valuesSecrets,omitempty"`
	Set                   map[string]intstr.IntOrString `json:"set,omitempty"`
	ChartContent          string                        `json:"chartContent,omitempty"`
	Timeout               *metav1.Duration              `json:"timeout,omitempty"`
	PlainHTTP             bool                          `json:"plainHTTP,omitempty"`
	InsecureSkipTLSVerify bool                          `json:"insecureSkipTLSVerify,omitempty"`
	FailurePolicy         string                        `json:"failurePolicy,omitempty"`
	AuthSecret            *NameRef                      `json:"authSecret,omitempty"`
	AuthPassCredentials   bool                          `json:"authPassCredentials,omitempty"`
}

// ConfigSpec is a HelmChartConfig's spec: values layered over the chart's.
type ConfigSpec struct {
	ValuesContent string         `json:"valuesContent,omitempty"`
	ValuesSecrets []SecretValues `json:"valuesSecrets,omitempty"`
	FailurePolicy string         `json:"failurePolicy,omitempty"`
}

// NameRef names an object in the HelmChart's namespace.
type NameRef struct {
	Name string `json:"name"`
}

// SecretValues are values files kept in a Secret's keys.
type SecretValues struct {
	Name string   `json:"name"`
	Keys []string `json:"keys,omitempty"`
}

// Status is what the controller reports.
type Status struct {
	State              string      `json:"state,omitempty"`
	Revision           int         `json:"revision,omitempty"`
	AppliedHash        string      `json:"appliedHash,omitempty"`
	Message            string      `json:"message,omitempty"`
	ObservedGeneration int64       `json:"observedGeneration,omitempty"`
	Conditions         []Condition `json:"conditions,omitempty"`
}

// Condition is one status condition (type Failed, as in k3s).
type Condition struct {
	Type               string `json:"type"`
	Status             string `json:"status"`
	Reason             string `json:"reason,omitempty"`
	Message            string `json:"message,omitempty"`
	LastTransitionTime string `json:"lastTransitionTime,omitempty"`
}

// States a HelmChart reports in status.state.
const (
	StateDeployed    = "Deployed"
	StateFailed      = "Failed"
	StateUninstalled = "Uninstalled"
)

// decode reads the field at path of u into out.
func decode(u *unstructured.Unstructured, field string, out any) error {
	m, found, err := unstructured.NestedMap(u.Object, field)
	if err != nil {
		return fmt.Errorf("%s: %w", field, err)
	}
	if !found {
		return nil
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(m, out); err != nil {
		return fmt.Errorf("%s: %w", field, err)
	}
	return nil
}

func (s Spec) timeout() time.Duration {
	if s.Timeout != nil && s.Timeout.Duration > 0 {
		return s.Timeout.Duration
	}
	return 300 * time.Second
}
