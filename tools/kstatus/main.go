// Command kstatus prints the kstatus verdict of Kubernetes objects, computed by the same
// library Flux, kpt and cli-utils use (sigs.k8s.io/cli-utils pkg/kstatus/status.Compute), so
// twinhull's tests check status against the real thing rather than a re-implementation.
//
// Usage:
//
//	kstatus [FILE...]   # no FILE: read standard input
//
// Each input is YAML or JSON: one object, several YAML documents, or a List (what
// `kubectl get -o yaml` prints for several objects). For every object it prints one JSON
// line {"status": "...", "message": "..."}, in input order. It exits 1 when an input cannot
// be read or an object has no kind, 2 on usage errors.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

// verdict is one output line.
type verdict struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "-h" || os.Args[1] == "--help") {
		fmt.Fprintln(os.Stderr, "usage: kstatus [FILE...]  (no FILE: standard input); prints "+
			`one {"status","message"} JSON line per object`)
		os.Exit(2)
	}
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	inputs := os.Args[1:]
	if len(inputs) == 0 {
		inputs = []string{"-"}
	}
	for _, name := range inputs {
		if err := computeFile(name, out); err != nil {
			out.Flush()
			fmt.Fprintf(os.Stderr, "kstatus: %s: %v\n", name, err)
			os.Exit(1)
		}
	}
}

// computeFile writes the verdict of every object in the named file ("-": standard input).
func computeFile(name string, out io.Writer) error {
	var r io.Reader = os.Stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(r, 4096)
	seen := 0
	for {
		var raw json.RawMessage
		err := dec.Decode(&raw)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("not YAML or JSON: %w", err)
		}
		if len(raw) == 0 || string(raw) == "null" {
			continue // an empty YAML document, e.g. after a trailing "---"
		}
		// UnmarshalJSON keeps integers as int64, as the API machinery does: kstatus reads
		// metadata.generation and status.observedGeneration with NestedInt64.
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(raw); err != nil {
			return fmt.Errorf("object %d: %w", seen+1, err)
		}
		objects := []unstructured.Unstructured{*u}
		if u.IsList() {
			list, err := u.ToList()
			if err != nil {
				return fmt.Errorf("object %d: %w", seen+1, err)
			}
			objects = list.Items
		}
		for i := range objects {
			res, err := status.Compute(&objects[i])
			if err != nil {
				return fmt.Errorf("object %d (%s %s): %w", seen+1, objects[i].GetKind(),
					objects[i].GetName(), err)
			}
			line, err := json.Marshal(verdict{Status: res.Status.String(), Message: res.Message})
			if err != nil {
				return err
			}
			if _, err := fmt.Fprintf(out, "%s\n", line); err != nil {
				return err
			}
			seen++
		}
	}
	if seen == 0 {
		return errors.New("no object in the input")
	}
	return nil
}
