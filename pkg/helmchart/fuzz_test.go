package helmchart

import (
	"testing"

	"k8s.io/apimachinery/pkg/util/intstr"
)

// valuesContent and set come from HelmChart objects.
func FuzzMergeValues(f *testing.F) {
	f.Add("a: 1\nb: {c: d}\n", "x.y", "v")
	f.Add("[", "a[0]", "1")
	f.Add("", "", "")
	f.Fuzz(func(t *testing.T, values, key, val string) {
		_, _ = mergeValues([]valuesFile{{from: "valuesContent", content: values}}, map[string]intstr.IntOrString{key: intstr.FromString(val)})
	})
}
