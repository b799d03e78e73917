// Package helmchart is kedge's HelmChart controller: it installs, upgrades
// and uninstalls Helm releases described by helm.cattle.io/v1 HelmChart
// objects (and the values of HelmChartConfig objects of the same name), as
// k3s's helm-controller does, but in-process with the Helm SDK: no job
// pod, no helm image. Charts come from chartContent, a repository, an
// http(s) URL, or <data-dir>/server/static/charts (also served at
// https://SERVER:6443/static/charts/).
package helmchart

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/storage/driver"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/kedge-dev/kedge/pkg/controller"
)

// Controller is the HelmChart controller component.
type Controller struct {
	Informers *controller.Informers
	// Kubeconfig is the identity Helm acts as (the server's supervisor).
	Kubeconfig string
	// StaticDir holds charts served at /static/charts/.
	StaticDir string
	// HelmHome holds Helm's cache and repository config.
	HelmHome string
	// APIHost is this server's host:port, replacing %{KUBERNETES_API}%.
	APIHost string
	// ServerCA verifies this server.
	ServerCA string
	Log      *slog.Logger

	src      *source
	charts   cache.GenericLister
	configs  cache.GenericLister
	loop     *controller.Loop
	recorder record.EventRecorder
	events   record.EventBroadcaster
	cancel   context.CancelFunc
	done     chan struct{}
	// mu serializes Helm actions: one release change at a time is plenty
	// on a small server and keeps memory flat.
	mu sync.Mutex
	// applied is the hash last deployed per object: the informer's copy of
	// the status may lag behind our own update.
	applied map[types.UID]string
}

func (c *Controller) Name() string { return "helm-controller" }

func (c *Controller) Start(context.Context) error {
	ca, err := os.ReadFile(c.ServerCA)
	if err != nil {
		return err
	}
	for _, d := range []string{c.StaticDir, c.HelmHome} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	c.applied = map[types.UID]string{}
	c.src = &source{staticDir: c.StaticDir, apiHost: c.APIHost, serverCA: ca, helmHome: c.HelmHome}
	chartInf := c.Informers.Untyped.ForResource(ChartResource)
	configInf := c.Informers.Untyped.ForResource(ConfigResource)
	c.charts, c.configs = chartInf.Lister(), configInf.Lister()
	c.loop = &controller.Loop{Name: "helmchart", Reconcile: c.reconcile, Log: c.Log}
	if _, err := chartInf.Informer().AddEventHandler(c.loop.Handler(controller.KeyOf)); err != nil {
		return err
	}
	// A HelmChartConfig changes the values of the HelmChart of its name.
	if _, err := configInf.Informer().AddEventHandler(c.loop.Handler(controller.KeyOf)); err != nil {
		return err
	}
	c.events = record.NewBroadcaster()
	c.events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.Informers.Client.CoreV1().Events("")})
	c.recorder = c.events.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "helm-controller"})
	c.Informers.Start()
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel, c.done = cancel, make(chan struct{})
	go func() {
		defer close(c.done)
		if err := c.loop.Run(ctx, 1, chartInf.Informer().HasSynced, configInf.Informer().HasSynced); err != nil && ctx.Err() == nil {
			c.Log.Error("helm-controller", "err", err)
		}
	}()
	return nil
}

func (c *Controller) Ready(context.Context) error { return c.loop.Ready() }

func (c *Controller) Stop() error {
	if c.cancel == nil {
		return nil
	}
	c.cancel()
	<-c.done
	c.events.Shutdown()
	return nil
}

func (c *Controller) reconcile(ctx context.Context, key string) error {
	obj, err := c.charts.Get(key)
	if apierrors.IsNotFound(err) {
		return nil // gone: its finalizer saw the release uninstalled
	}
	if err != nil {
		return err
	}
	u := obj.(*unstructured.Unstructured).DeepCopy()
	var spec Spec
	if err := decode(u, "spec", &spec); err != nil {
		c.fail(ctx, u, invalid("spec: %v", err))
		return nil
	}
	target := spec.TargetNamespace
	if target == "" {
		target = u.GetNamespace()
	}
	if u.GetDeletionTimestamp() != nil {
		return c.remove(ctx, u, target)
	}
	if !slices.Contains(u.GetFinalizers(), Finalizer) {
		u.SetFinalizers(append(u.GetFinalizers(), Finalizer))
		updated, err := c.Informers.Dynamic.Resource(ChartResource).Namespace(u.GetNamespace()).Update(ctx, u, metav1.UpdateOptions{})
		if err != nil {
			return err
		}
		u = updated
	}
	return c.apply(ctx, u, spec, target)
}

// apply installs or upgrades the release when what it would deploy (the
// chart and values) changed since the last success.
func (c *Controller) apply(ctx context.Context, u *unstructured.Unstructured, spec Spec, target string) error {
	var status Status
	_ = decode(u, "status", &status)
	files, policy, err := c.valuesFiles(ctx, u, spec)
	if err != nil {
		return c.fail(ctx, u, err)
	}
	caBundle, user, password, err := c.repoAuth(ctx, u.GetNamespace(), spec)
	if err != nil {
		return c.fail(ctx, u, err)
	}
	arch, err := c.src.load(ctx, spec, caBundle, user, password)
	if err != nil {
		return c.fail(ctx, u, err)
	}
	values, err := mergeValues(files, spec.Set)
	if err != nil {
		return c.fail(ctx, u, err)
	}
	hash := fingerprint(arch.raw, values, target, spec.CreateNamespace)
	c.mu.Lock()
	defer c.mu.Unlock()
	cfg, err := c.helm(target)
	if err != nil {
		return err
	}
	name := u.GetName()
	last, err := lastRelease(cfg, name)
	if err != nil {
		return err
	}
	if last != nil && last.Info.Status == release.StatusDeployed && (status.AppliedHash == hash || c.applied[u.GetUID()] == hash) {
		if status.State != StateDeployed {
			return c.setStatus(ctx, u, Status{State: StateDeployed, Revision: last.Version, AppliedHash: hash}, "")
		}
		return nil
	}
	var rel *release.Release
	verb := "Upgraded"
	switch {
	case last == nil || !hasDeployed(cfg, name):
		if last != nil {
			// Only failed attempts so far: clear them, then install
			// afresh (failurePolicy reinstall, k3s's default).
			if policy == "abort" {
				return c.fail(ctx, u, invalid("release %s failed and failurePolicy is abort: fix it by hand, then delete its Helm history", name))
			}
			un := action.NewUninstall(cfg)
			un.Timeout = spec.timeout()
			if _, err := un.Run(name); err != nil && !errors.Is(err, driver.ErrReleaseNotFound) {
				return c.fail(ctx, u, fmt.Errorf("clear failed release %s: %w", name, err))
			}
		}
		in := action.NewInstall(cfg)
		in.ReleaseName, in.Namespace, in.CreateNamespace = name, target, spec.CreateNamespace
		in.Timeout = spec.timeout()
		rel, err = in.RunWithContext(ctx, arch.chart, values)
		verb = "Installed"
	default:
		up := action.NewUpgrade(cfg)
		up.Namespace, up.Timeout, up.MaxHistory = target, spec.timeout(), 10
		rel, err = up.RunWithContext(ctx, name, arch.chart, values)
	}
	if err != nil {
		return c.fail(ctx, u, fmt.Errorf("%s %s: %w", strings.ToLower(strings.TrimSuffix(verb, "ed")), name, err))
	}
	c.applied[u.GetUID()] = hash
	msg := fmt.Sprintf("%s release %s (chart %s %s, revision %d) in namespace %s", verb, name, arch.chart.Metadata.Name, arch.chart.Metadata.Version, rel.Version, target)
	c.recorder.Event(u, corev1.EventTypeNormal, verb, msg)
	c.Log.Info("helm release "+strings.ToLower(verb), "helmchart", u.GetNamespace()+"/"+name, "chart", arch.chart.Metadata.Name, "version", arch.chart.Metadata.Version, "revision", rel.Version, "namespace", target)
	return c.setStatus(ctx, u, Status{State: StateDeployed, Revision: rel.Version, AppliedHash: hash}, "")
}

// remove uninstalls the release of a HelmChart being deleted, then lets
// the object go.
func (c *Controller) remove(ctx context.Context, u *unstructured.Unstructured, target string) error {
	if !slices.Contains(u.GetFinalizers(), Finalizer) {
		return nil
	}
	c.mu.Lock()
	cfg, err := c.helm(target)
	if err == nil {
		_, err = action.NewUninstall(cfg).Run(u.GetName())
	}
	c.mu.Unlock()
	switch {
	case err == nil:
		c.recorder.Eventf(u, corev1.EventTypeNormal, "Uninstalled", "Uninstalled release %s from namespace %s", u.GetName(), target)
		c.Log.Info("helm release uninstalled", "helmchart", u.GetNamespace()+"/"+u.GetName(), "namespace", target)
	case errors.Is(err, driver.ErrReleaseNotFound):
	default:
		c.recorder.Eventf(u, corev1.EventTypeWarning, "Failed", "uninstall %s: %v", u.GetName(), err)
		return err
	}
	c.mu.Lock()
	delete(c.applied, u.GetUID())
	c.mu.Unlock()
	fin := slices.DeleteFunc(u.GetFinalizers(), func(f string) bool { return f == Finalizer })
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"finalizers": fin, "resourceVersion": u.GetResourceVersion()}})
	_, err = c.Informers.Dynamic.Resource(ChartResource).Namespace(u.GetNamespace()).Patch(ctx, u.GetName(), types.MergePatchType, patch, metav1.PatchOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// fail records err on the object (an Event and status.state Failed). Bad
// input waits for the object to change; anything else is retried.
func (c *Controller) fail(ctx context.Context, u *unstructured.Unstructured, err error) error {
	var bad badInput
	isBad := errors.As(err, &bad)
	var status Status
	_ = decode(u, "status", &status)
	// The same failure of the same generation was reported already (the
	// status update itself brings the object back here).
	if status.State == StateFailed && status.Message == err.Error() && status.ObservedGeneration == u.GetGeneration() {
		if isBad {
			return nil
		}
		return err
	}
	c.recorder.Event(u, corev1.EventTypeWarning, "Failed", err.Error())
	c.Log.Warn("helmchart failed", "helmchart", u.GetNamespace()+"/"+u.GetName(), "err", err)
	status.State = StateFailed
	if serr := c.setStatus(ctx, u, status, err.Error()); serr != nil {
		return serr
	}
	if isBad {
		return nil
	}
	return err
}

func (c *Controller) setStatus(ctx context.Context, u *unstructured.Unstructured, s Status, failure string) error {
	s.ObservedGeneration = u.GetGeneration()
	s.Message = failure
	cond := Condition{Type: "Failed", Status: "False"}
	if failure != "" {
		cond = Condition{Type: "Failed", Status: "True", Reason: "Error", Message: failure}
	}
	var old Status
	_ = decode(u, "status", &old)
	for _, oc := range old.Conditions {
		if oc.Type == cond.Type && oc.Status == cond.Status {
			cond.LastTransitionTime = oc.LastTransitionTime
		}
	}
	if cond.LastTransitionTime == "" {
		cond.LastTransitionTime = time.Now().UTC().Format(time.RFC3339)
	}
	s.Conditions = []Condition{cond}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&s)
	if err != nil {
		return err
	}
	u = u.DeepCopy()
	u.Object["status"] = m
	_, err = c.Informers.Dynamic.Resource(ChartResource).Namespace(u.GetNamespace()).UpdateStatus(ctx, u, metav1.UpdateOptions{})
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		return nil // a newer version is queued already
	}
	return err
}

// valuesFiles are the values layers of a HelmChart: its valuesContent and
// valuesSecrets, then its HelmChartConfig's. It also returns the failure
// policy in force.
func (c *Controller) valuesFiles(ctx context.Context, u *unstructured.Unstructured, spec Spec) ([]valuesFile, string, error) {
	ns, name := u.GetNamespace(), u.GetName()
	files := []valuesFile{{from: "valuesContent", content: spec.ValuesContent}}
	secrets, err := c.secretValues(ctx, ns, spec.ValuesSecrets)
	if err != nil {
		return nil, "", err
	}
	files = append(files, secrets...)
	policy := spec.FailurePolicy
	obj, err := c.configs.ByNamespace(ns).Get(name)
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return nil, "", err
	default:
		var cs ConfigSpec
		if err := decode(obj.(*unstructured.Unstructured), "spec", &cs); err != nil {
			return nil, "", invalid("HelmChartConfig %s/%s: %v", ns, name, err)
		}
		files = append(files, valuesFile{from: "HelmChartConfig " + ns + "/" + name + " valuesContent", content: cs.ValuesContent})
		secrets, err := c.secretValues(ctx, ns, cs.ValuesSecrets)
		if err != nil {
			return nil, "", err
		}
		files = append(files, secrets...)
		if cs.FailurePolicy != "" {
			policy = cs.FailurePolicy
		}
	}
	return files, policy, nil
}

func (c *Controller) secretValues(ctx context.Context, ns string, refs []SecretValues) ([]valuesFile, error) {
	var files []valuesFile
	for _, ref := range refs {
		s, err := c.Informers.Client.CoreV1().Secrets(ns).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("valuesSecrets: secret %s/%s: %w", ns, ref.Name, err)
		}
		keys := ref.Keys
		if len(keys) == 0 {
			keys = []string{"values.yaml"}
		}
		for _, k := range keys {
			data, ok := s.Data[k]
			if !ok {
				return nil, invalid("valuesSecrets: secret %s/%s has no key %q", ns, ref.Name, k)
			}
			files = append(files, valuesFile{from: "secret " + ns + "/" + ref.Name + " key " + k, content: string(data)})
		}
	}
	return files, nil
}

// repoAuth reads the repository CA and credentials a HelmChart names.
func (c *Controller) repoAuth(ctx context.Context, ns string, spec Spec) (ca []byte, user, password string, err error) {
	ca = []byte(spec.RepoCA)
	if ref := spec.RepoCAConfigMap; ref != nil {
		cm, err := c.Informers.Client.CoreV1().ConfigMaps(ns).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return nil, "", "", fmt.Errorf("repoCAConfigMap %s/%s: %w", ns, ref.Name, err)
		}
		for _, v := range cm.Data {
			ca = append(ca, []byte("\n"+v)...)
		}
	}
	if ref := spec.AuthSecret; ref != nil {
		s, err := c.Informers.Client.CoreV1().Secrets(ns).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return nil, "", "", fmt.Errorf("authSecret %s/%s: %w", ns, ref.Name, err)
		}
		user, password = string(s.Data["username"]), string(s.Data["password"])
	}
	return ca, user, password, nil
}

// helm is an action configuration for releases in namespace.
func (c *Controller) helm(namespace string) (*action.Configuration, error) {
	flags := genericclioptions.NewConfigFlags(false)
	flags.KubeConfig = &c.Kubeconfig
	flags.Namespace = &namespace
	cacheDir := filepath.Join(c.HelmHome, "kube-cache")
	flags.CacheDir = &cacheDir
	cfg := new(action.Configuration)
	logf := func(format string, v ...any) { c.Log.Debug(fmt.Sprintf(format, v...), "component", "helm") }
	if err := cfg.Init(flags, namespace, "secret", logf); err != nil {
		return nil, fmt.Errorf("helm: %w", err)
	}
	return cfg, nil
}

// lastRelease is the newest revision of name, or nil.
func lastRelease(cfg *action.Configuration, name string) (*release.Release, error) {
	rel, err := cfg.Releases.Last(name)
	if errors.Is(err, driver.ErrReleaseNotFound) {
		return nil, nil
	}
	return rel, err
}

func hasDeployed(cfg *action.Configuration, name string) bool {
	rel, err := cfg.Releases.Deployed(name)
	return err == nil && rel != nil
}

// fingerprint identifies what a release would deploy.
func fingerprint(chart []byte, values map[string]any, target string, createNS bool) string {
	h := sha256.New()
	h.Write(chart)
	v, _ := json.Marshal(values) // map keys are sorted
	h.Write(v)
	fmt.Fprintf(h, "\x00%s\x00%t", target, createNS)
	return hex.EncodeToString(h.Sum(nil))
}
