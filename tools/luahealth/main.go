// Command luahealth runs Argo CD resource health checks (health.lua) the way Argo CD runs
// them, so twinhull's checks are tested under the interpreter Argo CD embeds
// (github.com/yuin/gopher-lua at the version Argo CD pins) before anyone installs them.
//
// What "the way Argo CD runs them" means (argo-cd util/lua/lua.go, VM.runLua and
// VM.ExecuteHealthLua):
//   - a fresh Lua state per object; a script installed through argocd-cm runs with the
//     standard libraries skipped (useOpenLibs false), then only package, base, table and a
//     "safe" os (time and date only) opened. So string.*, math.* and string methods are
//     absent; -open-libs runs with every library, as Argo CD runs its built-in scripts;
//   - the object is the global obj, converted from its JSON form: maps and lists become
//     tables (lists from index 1), numbers Lua numbers, null nil;
//   - a one-second deadline;
//   - the script's last return value must be a table; it is encoded to JSON and read as
//     {status, message}; a status other than Healthy, Progressing, Degraded, Suspended,
//     Missing or Unknown becomes Unknown "Lua returned an invalid health status"; nil means
//     "no health"; an empty table an empty status.
//
// Usage:
//
//	luahealth [-open-libs] DIR...                  # run DIR/health_test.yaml against DIR/health.lua
//	luahealth [-open-libs] -eval SCRIPT [FILE...]  # print one {"status","message"} line per object
//
// DIR is laid out as in argo-cd's resource_customizations/<group>/<kind>/: health.lua,
// health_test.yaml (tests: [{healthStatus: {status, message}, inputPath: testdata/x.yaml}])
// and testdata/. A test fails when the result differs from healthStatus or the script
// errs; a testdata/*.yaml no test names is a failure too (a fixture nobody checks). The
// exit status is 1 when any test failed, 2 on usage or read errors.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"time"

	lua "github.com/yuin/gopher-lua"
	luajson "layeh.com/gopher-json"
	"sigs.k8s.io/yaml"
)

// HealthStatus is Argo CD's health.HealthStatus as the Lua result is decoded into it.
type HealthStatus struct {
	Status  string `json:"status,omitempty"`
	Message string `json:"message,omitempty"`
}

// testFile is health_test.yaml.
type testFile struct {
	Tests []struct {
		InputPath    string        `json:"inputPath"`
		HealthStatus *HealthStatus `json:"healthStatus"`
	} `json:"tests"`
}

const invalidHealthStatus = "Lua returned an invalid health status"

var validStatus = map[string]bool{
	"Unknown": true, "Progressing": true, "Suspended": true, "Healthy": true,
	"Degraded": true, "Missing": true,
}

func main() {
	openLibs := flag.Bool("open-libs", false,
		"open every Lua standard library (Argo CD's built-in scripts); default: as installed "+
			"through argocd-cm (package, base, table and a safe os only)")
	eval := flag.String("eval", "", "evaluate this health.lua on each FILE (or standard input)")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: luahealth [-open-libs] DIR...\n"+
			"       luahealth [-open-libs] -eval SCRIPT [FILE...]")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *eval != "" {
		os.Exit(evalFiles(*eval, flag.Args(), *openLibs))
	}
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	code := 0
	for _, dir := range flag.Args() {
		if c := runDir(dir, *openLibs); c > code {
			code = c
		}
	}
	os.Exit(code)
}

// evalFiles prints the health of every object in files (none: standard input).
func evalFiles(scriptPath string, files []string, openLibs bool) int {
	script, err := os.ReadFile(scriptPath)
	if err != nil {
		fmt.Fprintf(os.Stderr, "luahealth: %v\n", err)
		return 2
	}
	if len(files) == 0 {
		files = []string{"-"}
	}
	for _, name := range files {
		var data []byte
		if name == "-" {
			data, err = io.ReadAll(os.Stdin)
		} else {
			data, err = os.ReadFile(name)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "luahealth: %v\n", err)
			return 2
		}
		obj, err := readObject(data)
		if err != nil {
			fmt.Fprintf(os.Stderr, "luahealth: %s: %v\n", name, err)
			return 2
		}
		res, err := ExecuteHealthLua(obj, string(script), openLibs)
		if err != nil {
			fmt.Fprintf(os.Stderr, "luahealth: %s: %s: %v\n", name, scriptPath, err)
			return 1
		}
		line, _ := json.Marshal(res) // a nil result prints null: the script gave no health
		fmt.Println(string(line))
	}
	return 0
}

// runDir runs dir's health_test.yaml; it prints one line per test and a diff per failure.
func runDir(dir string, openLibs bool) int {
	script, err := os.ReadFile(filepath.Join(dir, "health.lua"))
	if err != nil {
		fmt.Fprintf(os.Stderr, "luahealth: %v\n", err)
		return 2
	}
	raw, err := os.ReadFile(filepath.Join(dir, "health_test.yaml"))
	if err != nil {
		fmt.Fprintf(os.Stderr, "luahealth: %v\n", err)
		return 2
	}
	var tests testFile
	if err := yaml.UnmarshalStrict(raw, &tests); err != nil {
		fmt.Fprintf(os.Stderr, "luahealth: %s: %v (expected tests: [{healthStatus: "+
			"{status, message}, inputPath: testdata/x.yaml}])\n",
			filepath.Join(dir, "health_test.yaml"), err)
		return 2
	}
	if len(tests.Tests) == 0 {
		fmt.Fprintf(os.Stderr, "luahealth: %s: no tests\n", filepath.Join(dir, "health_test.yaml"))
		return 2
	}
	failed := 0
	named := map[string]bool{}
	for _, tc := range tests.Tests {
		name := filepath.Join(dir, tc.InputPath)
		named[filepath.Clean(name)] = true
		data, err := os.ReadFile(name)
		if err != nil {
			fmt.Printf("FAIL %s\n     %v\n", name, err)
			failed++
			continue
		}
		obj, err := readObject(data)
		if err != nil {
			fmt.Printf("FAIL %s\n     not a Kubernetes object: %v\n", name, err)
			failed++
			continue
		}
		got, err := ExecuteHealthLua(obj, string(script), openLibs)
		if err != nil {
			fmt.Printf("FAIL %s\n     health.lua failed: %v\n", name, err)
			failed++
			continue
		}
		if !reflect.DeepEqual(got, tc.HealthStatus) {
			fmt.Printf("FAIL %s\n     want %s\n     got  %s\n", name, show(tc.HealthStatus), show(got))
			failed++
			continue
		}
		fmt.Printf("ok   %s  %s\n", name, show(got))
	}
	fixtures, _ := filepath.Glob(filepath.Join(dir, "testdata", "*.yaml"))
	sort.Strings(fixtures)
	for _, f := range fixtures {
		if !named[filepath.Clean(f)] {
			fmt.Printf("FAIL %s\n     no test in health_test.yaml names this fixture: add "+
				"{healthStatus: {status, message}, inputPath: %s}\n", f, mustRel(dir, f))
			failed++
		}
	}
	if failed > 0 {
		fmt.Printf("FAIL %s: %d failure(s), %d test(s)\n", dir, failed, len(tests.Tests))
		return 1
	}
	fmt.Printf("PASS %s: %d tests\n", dir, len(tests.Tests))
	return 0
}

func mustRel(dir, path string) string {
	rel, err := filepath.Rel(dir, path)
	if err != nil {
		return path
	}
	return rel
}

// show renders a result as YAML-ish flow text, quoting the message so a difference in
// white space is visible.
func show(h *HealthStatus) string {
	if h == nil {
		return "null (no health)"
	}
	return fmt.Sprintf("{status: %q, message: %q}", h.Status, h.Message)
}

// readObject reads one object as Argo CD's health tests do (sigs.k8s.io/yaml into a map).
func readObject(data []byte) (map[string]any, error) {
	obj := map[string]any{}
	if err := yaml.Unmarshal(data, &obj); err != nil {
		return nil, err
	}
	if len(obj) == 0 {
		return nil, errors.New("empty document")
	}
	return obj, nil
}

// ExecuteHealthLua runs script on obj and decodes its result as Argo CD does.
func ExecuteHealthLua(obj map[string]any, script string, openLibs bool) (*HealthStatus, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: !openLibs})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.OsLibName, openSafeOs},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true},
			lua.LString(lib.name)); err != nil {
			return nil, fmt.Errorf("opening Lua library %q: %w", lib.name, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(script); err != nil {
		return nil, err
	}
	ret := l.Get(-1)
	switch ret.Type() {
	case lua.LTNil:
		return nil, nil
	case lua.LTTable:
	default:
		return nil, fmt.Errorf("expect table output from Lua script, not %s", ret.Type())
	}
	encoded, err := luajson.Encode(ret)
	if err != nil {
		return nil, err
	}
	h := &HealthStatus{}
	if err := json.Unmarshal(encoded, h); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Value == "array" {
			return &HealthStatus{}, nil // an empty table encodes as []
		}
		return nil, err
	}
	if !validStatus[h.Status] {
		return &HealthStatus{Status: "Unknown", Message: invalidHealthStatus}, nil
	}
	return h, nil
}

// openSafeOs opens gopher-lua's os library and keeps only time and date, the functions
// Argo CD's safe os library offers (no exit, execute, getenv, remove, ...).
func openSafeOs(l *lua.LState) int {
	l.Push(l.NewFunction(lua.OpenOs))
	l.Call(0, 1)
	mod := l.Get(-1).(*lua.LTable)
	var drop []lua.LValue
	mod.ForEach(func(k, _ lua.LValue) {
		if s, ok := k.(lua.LString); !ok || (s != "time" && s != "date") {
			drop = append(drop, k)
		}
	})
	for _, k := range drop {
		mod.RawSet(k, lua.LNil)
	}
	return 1
}

// toLua converts a decoded JSON value as Argo CD's decodeValue does.
func toLua(l *lua.LState, v any) lua.LValue {
	switch x := v.(type) {
	case bool:
		return lua.LBool(x)
	case float64:
		return lua.LNumber(x)
	case int64:
		return lua.LNumber(x)
	case int:
		return lua.LNumber(x)
	case int32:
		return lua.LNumber(x)
	case json.Number:
		return lua.LString(x)
	case string:
		return lua.LString(x)
	case []any:
		t := l.CreateTable(len(x), 0)
		for _, item := range x {
			t.Append(toLua(l, item))
		}
		return t
	case map[string]any:
		t := l.CreateTable(0, len(x))
		for k, item := range x {
			t.RawSetH(lua.LString(k), toLua(l, item))
		}
		return t
	}
	return lua.LNil
}
