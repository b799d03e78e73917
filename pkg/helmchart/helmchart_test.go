package helmchart

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func TestMergeValues(t *testing.T) {
	got, err := mergeValues([]valuesFile{
		{from: "a", content: "replicaCount: 3\nimage: {tag: v1, repository: r}\n"},
		{from: "b", content: "image: {tag: v2}\n"},
	}, map[string]intstr.IntOrString{
		"replicaCount": intstr.FromInt32(2),
		"enabled":      intstr.FromString("true"),
		"name":         intstr.FromString("0123"),
	})
	if err != nil {
		t.Fatal(err)
	}
	img := got["image"].(map[string]any)
	if got["replicaCount"] != int64(2) || img["tag"] != "v2" || img["repository"] != "r" || got["enabled"] != true || got["name"] != "0123" {
		t.Fatalf("merged %#v", got)
	}
	_, err = mergeValues([]valuesFile{{from: "valuesContent", content: "a: [1"}}, nil)
	var bad badInput
	if !errors.As(err, &bad) || !strings.Contains(err.Error(), "valuesContent is not a YAML map") {
		t.Fatalf("bad values: %v", err)
	}
}

// chartTgz is a minimal chart archive.
func chartTgz(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for name, body := range map[string]string{
		"mini/Chart.yaml":        "apiVersion: v2\nname: mini\nversion: 0.1.0\n",
		"mini/values.yaml":       "x: 1\n",
		"mini/templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: mini}\n",
	} {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body))}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(body))
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

func TestSourceLoad(t *testing.T) {
	dir := t.TempDir()
	raw := chartTgz(t)
	if err := os.WriteFile(filepath.Join(dir, "mini-0.1.0.tgz"), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	src := &source{staticDir: dir, apiHost: "10.0.0.1:6443", helmHome: t.TempDir()}
	for name, spec := range map[string]Spec{
		"chartContent":      {ChartContent: base64.StdEncoding.EncodeToString(raw)},
		"static file":       {Chart: "mini-0.1.0.tgz"},
		"this server's URL": {Chart: "https://%{KUBERNETES_API}%/static/charts/mini-0.1.0.tgz"},
	} {
		a, err := src.load(context.Background(), spec, nil, "", "")
		if err != nil || a.chart.Metadata.Name != "mini" {
			t.Errorf("%s: %v", name, err)
		}
	}
	for name, c := range map[string]struct {
		spec Spec
		sub  string
	}{
		"not base64":    {Spec{ChartContent: "%%%"}, "chartContent is not base64"},
		"not a chart":   {Spec{ChartContent: base64.StdEncoding.EncodeToString([]byte("junk"))}, "chartContent is not a chart archive"},
		"nothing":       {Spec{}, "neither chart nor chartContent"},
		"missing file":  {Spec{Chart: "other.tgz"}, "no such file"},
		"escape":        {Spec{Chart: "../mini-0.1.0.tgz"}, "no such file"},
		"escape by URL": {Spec{Chart: "https://%{KUBERNETES_API}%/static/charts/../x"}, "no such file"},
	} {
		_, err := src.load(context.Background(), c.spec, nil, "", "")
		var bad badInput
		if !errors.As(err, &bad) || !strings.Contains(err.Error(), c.sub) {
			t.Errorf("%s: %v, want bad input %q", name, err, c.sub)
		}
	}
}

func TestDecodeSpec(t *testing.T) {
	u := &unstructured.Unstructured{Object: map[string]any{"spec": map[string]any{
		"chart": "web", "timeout": "90s", "set": map[string]any{"a": int64(1), "b": "x"},
	}}}
	var s Spec
	if err := decode(u, "spec", &s); err != nil {
		t.Fatal(err)
	}
	if s.Chart != "web" || s.timeout().Seconds() != 90 || s.Set["a"].IntVal != 1 || s.Set["b"].StrVal != "x" {
		t.Fatalf("%+v", s)
	}
	if (Spec{}).timeout().Seconds() != 300 {
		t.Fatal("default timeout")
	}
}
