package durability_test

import (
	"fmt"
	"os"
	"testing"

	"securefastchat/internal/testbin"
)

// binPath is the binary under test, built once for the package.
var binPath string

func TestMain(m *testing.M) {
	path, cleanup, err := testbin.Build()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = path
	code := m.Run()
	cleanup()
	os.Exit(code)
}

func newChild(t *testing.T) *testbin.Child { return testbin.NewChild(t, binPath) }

// run runs the binary with args and the environment plus env.
func run(t *testing.T, env []string, args ...string) testbin.Result {
	t.Helper()
	return testbin.Run(t, binPath, env, "", args...)
}
