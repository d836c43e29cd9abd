package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tpcd/tpcd/internal/testbin"
)

func TestMain(m *testing.M) { os.Exit(testbin.Main(m, nil)) }

// The parts of the Kubernetes objects the test reads.
type (
	object struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string `yaml:"kind"`
		Metadata   struct {
			Name   string            `yaml:"name"`
			Labels map[string]string `yaml:"labels"`
		} `yaml:"metadata"`
		Spec       spec              `yaml:"spec"`
		StringData map[string]string `yaml:"stringData"`
	}
	spec struct {
		Replicas       *int `yaml:"replicas"`
		MaxUnavailable *int `yaml:"maxUnavailable"`
		MinAvailable   *int `yaml:"minAvailable"`
		Strategy       struct {
			Type          string `yaml:"type"`
			RollingUpdate struct {
				MaxUnavailable *int `yaml:"maxUnavailable"`
			} `yaml:"rollingUpdate"`
		} `yaml:"strategy"`
		ServiceName string `yaml:"serviceName"`
		ClusterIP   string `yaml:"clusterIP"`
		Selector    struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		ServiceSelector map[string]string // a Service's spec.selector, filled by decode
		Ports           []struct {
			Name string `yaml:"name"`
			Port int    `yaml:"port"`
		} `yaml:"ports"`
		Template struct {
			Metadata struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec struct {
				TerminationGracePeriodSeconds int         `yaml:"terminationGracePeriodSeconds"`
				Containers                    []container `yaml:"containers"`
				Affinity                      struct {
					PodAntiAffinity struct {
						Required []struct {
							TopologyKey   string `yaml:"topologyKey"`
							LabelSelector struct {
								MatchLabels map[string]string `yaml:"matchLabels"`
							} `yaml:"labelSelector"`
						} `yaml:"requiredDuringSchedulingIgnoredDuringExecution"`
					} `yaml:"podAntiAffinity"`
				} `yaml:"affinity"`
			} `yaml:"spec"`
		} `yaml:"template"`
	}
	container struct {
		Name  string   `yaml:"name"`
		Image string   `yaml:"image"`
		Args  []string `yaml:"args"`
		Env   []struct {
			Name      string `yaml:"name"`
			Value     string `yaml:"value"`
			ValueFrom *struct {
				SecretKeyRef *struct {
					Name string `yaml:"name"`
					Key  string `yaml:"key"`
				} `yaml:"secretKeyRef"`
				FieldRef *struct {
					FieldPath string `yaml:"fieldPath"`
				} `yaml:"fieldRef"`
			} `yaml:"valueFrom"`
		} `yaml:"env"`
		Ports []struct {
			ContainerPort int `yaml:"containerPort"`
		} `yaml:"ports"`
		ReadinessProbe struct {
			Exec *struct {
				Command []string `yaml:"command"`
			} `yaml:"exec"`
		} `yaml:"readinessProbe"`
		Lifecycle struct {
			PreStop struct {
				Exec *struct {
					Command []string `yaml:"command"`
				} `yaml:"exec"`
			} `yaml:"preStop"`
		} `yaml:"lifecycle"`
		LivenessProbe struct {
			HTTPGet *struct {
				Path string `yaml:"path"`
				Port int    `yaml:"port"`
			} `yaml:"httpGet"`
		} `yaml:"livenessProbe"`
	}
)

// load reads every document of the example, strictly: a field the test
// does not know is fine, a malformed document is not.
func load(t *testing.T) map[string]object {
	t.Helper()
	raw, err := os.ReadFile("kubernetes/tpcd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	objs := map[string]object{}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	for {
		var node yaml.Node
		if err := dec.Decode(&node); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("kubernetes/tpcd.yaml: %v", err)
		}
		var o object
		if err := node.Decode(&o); err != nil {
			t.Fatalf("kubernetes/tpcd.yaml: %v", err)
		}
		if o.Kind == "Service" {
			var svc struct {
				Spec struct {
					Selector map[string]string `yaml:"selector"`
				} `yaml:"spec"`
			}
			if err := node.Decode(&svc); err != nil {
				t.Fatal(err)
			}
			o.Spec.ServiceSelector = svc.Spec.Selector
		}
		if o.APIVersion == "" || o.Kind == "" || o.Metadata.Name == "" {
			t.Fatalf("a document without apiVersion, kind or name: %+v", o)
		}
		key := o.Kind + "/" + o.Metadata.Name
		if _, dup := objs[key]; dup {
			t.Fatalf("%s twice", key)
		}
		objs[key] = o
	}
	return objs
}

func get(t *testing.T, objs map[string]object, key string) object {
	t.Helper()
	o, ok := objs[key]
	if !ok {
		t.Fatalf("no %s in the example", key)
	}
	return o
}

// helpEnvs and helpFlags read what `tpcd CMD --help` lists.
var (
	helpFlag = regexp.MustCompile(`(?m)^\s+(?:-\w, )?(--[a-z][a-z0-9-]*)`)
	helpEnv  = regexp.MustCompile(`\$(TPCD_[A-Z_]+)`)
)

func help(t *testing.T, args ...string) (flags, envs []string) {
	t.Helper()
	out, _, code := testbin.Run(t, testbin.Binary(t), nil, "", append(args, "--help")...)
	if code != 0 {
		t.Fatalf("tpcd %s --help: exit %d", strings.Join(args, " "), code)
	}
	for _, m := range helpFlag.FindAllStringSubmatch(out, -1) {
		flags = append(flags, strings.TrimPrefix(m[1], "--[no-]"))
	}
	for _, m := range helpEnv.FindAllStringSubmatch(out, -1) {
		envs = append(envs, m[1])
	}
	return flags, envs
}

// checkContainer checks a container against the command it runs: every
// flag and every TPCD_ variable is one the command takes, every $(VAR) is
// defined before it is used, secrets are ones the example defines, and the
// readiness probe asks the container's own metrics listener.
func checkContainer(t *testing.T, objs map[string]object, c container, command string) {
	t.Helper()
	if len(c.Args) == 0 || c.Args[0] != command {
		t.Fatalf("%s: args %q do not start with %s", c.Name, c.Args, command)
	}
	flags, envs := help(t, command)
	metrics := ""
	for _, a := range c.Args[1:] {
		name, value, _ := strings.Cut(a, "=")
		if !slices.Contains(flags, name) {
			t.Errorf("%s: tpcd %s takes no %s", c.Name, command, name)
		}
		if name == "--metrics-addr" {
			metrics = value
		}
	}
	defined := map[string]bool{}
	ref := regexp.MustCompile(`\$\(([A-Z_]+)\)`)
	for _, e := range c.Env {
		if strings.HasPrefix(e.Name, "TPCD_") && !slices.Contains(envs, e.Name) {
			t.Errorf("%s: tpcd %s reads no %s", c.Name, command, e.Name)
		}
		for _, m := range ref.FindAllStringSubmatch(e.Value, -1) {
			if !defined[m[1]] {
				t.Errorf("%s: %s uses $(%s) before it is defined", c.Name, e.Name, m[1])
			}
		}
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			s := get(t, objs, "Secret/"+e.ValueFrom.SecretKeyRef.Name)
			if _, ok := s.StringData[e.ValueFrom.SecretKeyRef.Key]; !ok {
				t.Errorf("%s: %s reads key %s, which secret %s lacks", c.Name, e.Name, e.ValueFrom.SecretKeyRef.Key, e.ValueFrom.SecretKeyRef.Name)
			}
		}
		defined[e.Name] = true
	}
	_, port, _ := strings.Cut(metrics, ":")
	if c.ReadinessProbe.Exec == nil {
		t.Fatalf("%s: no readiness probe", c.Name)
	}
	checkProbe(t, c.Name+": readiness probe", c.ReadinessProbe.Exec.Command, port)
	if p := c.LivenessProbe.HTTPGet; p == nil || p.Path != "/healthz" || fmt.Sprint(p.Port) != port {
		t.Errorf("%s: liveness probe %+v is not /healthz on %s", c.Name, p, port)
	}
}

// checkProbe checks a command that runs tpcd probe: it asks the
// container's own metrics listener, with flags tpcd probe takes, and
// returns them.
func checkProbe(t *testing.T, what string, command []string, port string) []string {
	t.Helper()
	if len(command) < 3 || command[0] != "tpcd" || command[1] != "probe" || command[len(command)-1] != "127.0.0.1:"+port {
		t.Errorf("%s %q does not ask its metrics listener (port %s) with tpcd probe", what, command, port)
		return nil
	}
	probeFlags, _ := help(t, "probe")
	flags := command[2 : len(command)-1]
	for _, a := range flags {
		name, _, _ := strings.Cut(a, "=")
		if !slices.Contains(probeFlags, name) {
			t.Errorf("%s: tpcd probe takes no %s", what, name)
		}
	}
	return flags
}

// flagValue is the value of --name=value in args.
func flagValue(args []string, name string) string {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
	}
	return ""
}

// TestKubernetesExample checks deploy/kubernetes/tpcd.yaml against the
// tpcd binary and against itself.
func TestKubernetesExample(t *testing.T) {
	objs := load(t)

	coord := get(t, objs, "Deployment/tpcd-coordinator")
	cc := coord.Spec.Template.Spec.Containers
	if len(cc) != 1 {
		t.Fatalf("coordinator pod: %d containers", len(cc))
	}
	checkContainer(t, objs, cc[0], "coordinator")
	// Coordinators on one log take turns by the lease, on machines of
	// their own. A standby counts as ready, or a rollout would wait for it
	// forever; a rollout stops none before its replacement is ready, and a
	// drain takes one at a time.
	if coord.Spec.Replicas == nil || *coord.Spec.Replicas < 2 {
		t.Errorf("coordinators: replicas %v, want a standby", coord.Spec.Replicas)
	}
	if d, err := time.ParseDuration(flagValue(cc[0].Args, "--lease")); err != nil || d <= 0 {
		t.Errorf("coordinators share the log without --lease: %q", cc[0].Args)
	}
	apart := false
	for _, r := range coord.Spec.Template.Spec.Affinity.PodAntiAffinity.Required {
		apart = apart || r.TopologyKey == "kubernetes.io/hostname" && maps.Equal(r.LabelSelector.MatchLabels, coord.Spec.Selector.MatchLabels)
	}
	if !apart {
		t.Error("both coordinators may land on one machine: no anti-affinity on kubernetes.io/hostname")
	}
	if !slices.Contains(cc[0].ReadinessProbe.Exec.Command, "--standby-ready") {
		t.Errorf("a standby coordinator is never ready to %q: rollouts and drains would wait for it", cc[0].ReadinessProbe.Exec.Command)
	}
	if ru := coord.Spec.Strategy.RollingUpdate.MaxUnavailable; coord.Spec.Strategy.Type != "RollingUpdate" || ru == nil || *ru != 0 {
		t.Errorf("coordinators roll with strategy %q, maxUnavailable %v; want RollingUpdate keeping every replica", coord.Spec.Strategy.Type, ru)
	}
	if svc := get(t, objs, "Service/tpcd-coordinator"); svc.Spec.ClusterIP != "None" {
		t.Error("the coordinators' service is not headless: a connection through its one address may land on a standby")
	}
	cpdb := get(t, objs, "PodDisruptionBudget/tpcd-coordinator")
	if cpdb.Spec.MinAvailable == nil || *cpdb.Spec.MinAvailable != 1 {
		t.Errorf("the coordinators' disruption budget keeps %v available, want 1", cpdb.Spec.MinAvailable)
	}

	parts := get(t, objs, "StatefulSet/tpcd-participant")
	pc := parts.Spec.Template.Spec.Containers
	if len(pc) != 1 {
		t.Fatalf("participant pod: %d containers", len(pc))
	}
	checkContainer(t, objs, pc[0], "participant")
	// Stopped by choice, a participant first waits until nothing is in
	// doubt, within its grace period.
	stop := pc[0].Lifecycle.PreStop.Exec
	if stop == nil {
		t.Fatal("participants have no preStop hook")
	}
	_, port, _ := strings.Cut(flagValue(pc[0].Args, "--metrics-addr"), ":")
	flags := checkProbe(t, "participant: preStop", stop.Command, port)
	wait, err := time.ParseDuration(flagValue(flags, "--until-settled"))
	if grace := time.Duration(parts.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second; err != nil || wait <= 0 || wait >= grace {
		t.Errorf("participant: preStop %q waits %v (%v), want less than the grace period %v", stop.Command, wait, err, grace)
	}

	// The coordinator lists the participants in pod-index order, at the
	// headless service's names, as many as the StatefulSet runs.
	headless := get(t, objs, "Service/"+parts.Spec.ServiceName)
	if headless.Spec.ClusterIP != "None" {
		t.Errorf("service %s is not headless", parts.Spec.ServiceName)
	}
	var listed []string
	for _, a := range cc[0].Args {
		if v, ok := strings.CutPrefix(a, "--participant="); ok {
			listed = append(listed, v)
		}
	}
	if parts.Spec.Replicas == nil || len(listed) != *parts.Spec.Replicas {
		t.Fatalf("the coordinator lists %d participants, the StatefulSet runs %v", len(listed), parts.Spec.Replicas)
	}
	for i, addr := range listed {
		want := fmt.Sprintf("%s-%d.%s:%d", parts.Metadata.Name, i, headless.Metadata.Name, headless.Spec.Ports[0].Port)
		if addr != want {
			t.Errorf("participant %d is listed at %s, want %s", i, addr, want)
		}
	}
	nodeID := false
	for _, e := range pc[0].Env {
		if e.Name == "TPCD_NODE_ID" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil &&
			e.ValueFrom.FieldRef.FieldPath == "metadata.labels['apps.kubernetes.io/pod-index']" {
			nodeID = true
		}
	}
	if !nodeID {
		t.Error("a participant's --node-id is not its pod index")
	}

	// Services and the disruption budget select the pods they mean.
	for key, pods := range map[string]map[string]string{
		"Service/tpcd-coordinator":          coord.Spec.Template.Metadata.Labels,
		"Service/" + headless.Metadata.Name: parts.Spec.Template.Metadata.Labels,
	} {
		for k, v := range get(t, objs, key).Spec.ServiceSelector {
			if pods[k] != v {
				t.Errorf("%s selects %s=%s, which its pods lack", key, k, v)
			}
		}
	}
	pdb := get(t, objs, "PodDisruptionBudget/tpcd-participant")
	if pdb.Spec.MaxUnavailable == nil || *pdb.Spec.MaxUnavailable != 1 {
		t.Errorf("the participants' disruption budget allows %v down at once, want 1", pdb.Spec.MaxUnavailable)
	}
	for key, pods := range map[string]map[string]string{
		"PodDisruptionBudget/tpcd-coordinator": coord.Spec.Template.Metadata.Labels,
		"PodDisruptionBudget/tpcd-participant": parts.Spec.Template.Metadata.Labels,
	} {
		for k, v := range get(t, objs, key).Spec.Selector.MatchLabels {
			if pods[k] != v {
				t.Errorf("%s selects %s=%s, which its pods lack", key, k, v)
			}
		}
	}
}
