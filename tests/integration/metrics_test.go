package integration

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// kubectl top works for nodes and pods, through the metrics.k8s.io
// APIService that kedge's in-process metrics-server serves.
func TestMetricsAPI(t *testing.T) {
	if out := shared.kubectl(t, "get", "apiservice", "v1beta1.metrics.k8s.io"); !strings.Contains(out, "True") {
		t.Fatalf("metrics APIService not available:\n%s", out)
	}
	eventually(t, 2*time.Minute, "kubectl top nodes shows the node", func() error {
		out, err := shared.kubectlErr("top", "nodes")
		if err != nil || !strings.Contains(out, sharedNodeName) || !strings.Contains(out, "CPU(cores)") {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	eventually(t, 2*time.Minute, "kubectl top pods -A shows CoreDNS", func() error {
		out, err := shared.kubectlErr("top", "pods", "-A")
		if err != nil || !strings.Contains(out, "coredns") {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	// A user without rights gets 403, as from the real metrics-server.
	if out, err := shared.kubectlErr("--as", "nobody", "top", "nodes"); err == nil || !strings.Contains(out, "Forbidden") {
		t.Fatalf("kubectl top as an unauthorized user: %v %s", err, out)
	}
}

// A HorizontalPodAutoscaler on CPU scales a Deployment up under load and
// back down when the load stops.
func TestHorizontalPodAutoscaler(t *testing.T) {
	ns := namespace(t, shared)
	shared.apply(t, fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: %[1]s}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: kedge.test/hello:v1
        imagePullPolicy: Never
        ports: [{containerPort: 8080}]
        resources:
          requests: {cpu: 20m}
          limits: {cpu: 200m}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: %[1]s}
spec:
  selector: {app: web}
  ports: [{port: 8080}]
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web, namespace: %[1]s}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  minReplicas: 1
  maxReplicas: 3
  metrics:
  - type: Resource
    resource: {name: cpu, target: {type: Utilization, averageUtilization: 50}}
  behavior:
    scaleUp: {stabilizationWindowSeconds: 0}
    scaleDown:
      stabilizationWindowSeconds: 0
      policies: [{type: Percent, value: 100, periodSeconds: 15}]
`, ns))
	shared.waitRollout(t, ns, "deployment/web")
	eventually(t, 2*time.Minute, "the HPA reads the pods' CPU", func() error {
		if cur := shared.jsonpath(ns, "hpa/web", "{.status.currentMetrics[0].resource.current.averageUtilization}"); cur == "" {
			out, _ := shared.kubectlErr("-n", ns, "describe", "hpa", "web")
			return fmt.Errorf("no current utilization yet:\n%s", out)
		}
		return nil
	})
	// Load: two clients asking for 200 ms of CPU, again and again.
	shared.apply(t, fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: load, namespace: %s}
spec:
  replicas: 2
  selector: {matchLabels: {app: load}}
  template:
    metadata: {labels: {app: load}}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - name: load
        image: kedge.test/hello:v1
        imagePullPolicy: Never
        command: [sh, -c, "while true; do wget -q -O /dev/null http://web:8080/burn?ms=200 || sleep 1; done"]
`, ns))
	replicas := func() int {
		n, _ := strconv.Atoi(strings.TrimSpace(shared.jsonpath(ns, "deployment/web", "{.status.replicas}")))
		return n
	}
	eventually(t, 4*time.Minute, "the HPA scales web up under load", func() error {
		if r := replicas(); r < 2 {
			out, _ := shared.kubectlErr("-n", ns, "get", "hpa", "web")
			return fmt.Errorf("%d replicas:\n%s", r, out)
		}
		return nil
	})
	shared.kubectl(t, "-n", ns, "delete", "deployment", "load")
	eventually(t, 4*time.Minute, "the HPA scales web back down without load", func() error {
		if r := replicas(); r != 1 {
			out, _ := shared.kubectlErr("-n", ns, "get", "hpa", "web")
			return fmt.Errorf("%d replicas:\n%s", r, out)
		}
		return nil
	})
}
