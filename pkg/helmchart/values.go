package helmchart

import (
	"fmt"
	"sort"

	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/strvals"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// valuesFile is one layer of values and where it came from, for errors.
type valuesFile struct {
	from    string
	content string
}

// mergeValues layers the values files in order (a later file wins, as
// with helm -f a -f b), then the set entries (as --set, which wins over
// files). A value that is not YAML is bad input naming its source.
func mergeValues(files []valuesFile, set map[string]intstr.IntOrString) (map[string]any, error) {
	out := map[string]any{}
	for _, f := range files {
		if f.content == "" {
			continue
		}
		var m map[string]any
		if err := yaml.Unmarshal([]byte(f.content), &m); err != nil {
			return nil, invalid("%s is not a YAML map of values: %v", f.from, err)
		}
		out = chartutil.MergeTables(m, out)
	}
	keys := make([]string, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := set[k]
		var err error
		switch {
		case v.Type == intstr.Int:
			err = strvals.ParseInto(fmt.Sprintf("%s=%d", k, v.IntVal), out)
		case v.StrVal == "true" || v.StrVal == "false":
			err = strvals.ParseInto(k+"="+v.StrVal, out)
		default:
			// Strings stay strings, as helm --set-string.
			err = strvals.ParseIntoString(k+"="+v.StrVal, out)
		}
		if err != nil {
			return nil, invalid("set %q: %v", k, err)
		}
	}
	return out, nil
}
