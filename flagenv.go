package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// envName is the environment variable that sets flag name: --msg-every is
// SFC_MSG_EVERY.
func envName(name string) string {
	return "SFC_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// parseFlagsEnv parses a command's flags after setting each one whose
// environment variable is set; flags on the command line win.
func parseFlagsEnv(fs *flag.FlagSet, args []string) error {
	var bad error
	fs.VisitAll(func(f *flag.Flag) {
		v, ok := os.LookupEnv(envName(f.Name))
		if !ok || bad != nil {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			bad = usagef("%s=%q: %v", envName(f.Name), v, err)
		}
	})
	if bad != nil {
		return bad
	}
	return parseFlags(fs, args)
}

// printDefaultsEnv lists the flags with their environment variables and
// defaults.
func printDefaultsEnv(w io.Writer, fs *flag.FlagSet) { writeFlags(w, fs, true) }

// printFlags lists a command's flags the way every usage text writes
// them: --name VALUE, then what it does and its default.
func printFlags(w io.Writer, fs *flag.FlagSet) { writeFlags(w, fs, false) }

func writeFlags(w io.Writer, fs *flag.FlagSet, env bool) {
	fs.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		head := "  --" + f.Name
		if name != "" {
			head += " " + name
		}
		var notes []string
		if env {
			notes = append(notes, "env "+envName(f.Name))
		}
		if f.DefValue != "" && f.DefValue != "false" && (env || f.DefValue != "0") {
			notes = append(notes, fmt.Sprintf("default %q", f.DefValue))
		}
		tail := ""
		if len(notes) > 0 {
			tail = " (" + strings.Join(notes, ", ") + ")"
		}
		fmt.Fprintf(w, "%s\n    \t%s%s\n", head, usage, tail)
	})
}
