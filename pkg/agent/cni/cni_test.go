package cni

import (
	"encoding/json"
	"testing"
)

func TestRender(t *testing.T) {
	data, err := Render("cni0", []string{"10.42.0.0/24", "fd00:42::/64"}, "/var/lib/kedge/agent/cni/ipam", false, 1450)
	if err != nil {
		t.Fatal(err)
	}
	var conf struct {
		CNIVersion string `json:"cniVersion"`
		Plugins    []struct {
			Type   string `json:"type"`
			IPMasq bool   `json:"ipMasq"`
			MTU    int    `json:"mtu"`
			IPAM   struct {
				Ranges [][]struct{ Subnet string } `json:"ranges"`
				Routes []struct{ Dst string }      `json:"routes"`
			} `json:"ipam"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(data, &conf); err != nil {
		t.Fatal(err)
	}
	if len(conf.Plugins) != 3 || conf.Plugins[0].Type != "bridge" || conf.Plugins[1].Type != "portmap" || conf.Plugins[2].Type != "bandwidth" {
		t.Fatalf("plugins: %s", data)
	}
	if conf.Plugins[0].IPMasq || conf.Plugins[0].MTU != 1450 {
		t.Fatalf("with flannel: ipMasq %v mtu %d", conf.Plugins[0].IPMasq, conf.Plugins[0].MTU)
	}
	ipam := conf.Plugins[0].IPAM
	if ipam.Ranges[0][0].Subnet != "10.42.0.0/24" || ipam.Ranges[1][0].Subnet != "fd00:42::/64" || ipam.Routes[1].Dst != "::/0" {
		t.Fatalf("ipam: %s", data)
	}
}
