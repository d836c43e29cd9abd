package main

import (
	"fmt"
	"io"
	"os"

	"github.com/alecthomas/kong"
)

// Every flag reads TPCD_<FLAG> (kong.DefaultEnvars), unless the flag names
// its variables itself. Where one flag name meant different things to two
// commands (--duration to bench and to chaos), each command now has a
// variable of its own, listed first, and the old shared name after it:
// kong still reads the old one when the new one is unset, and
// warnDeprecatedEnvs says so. Such a flag's help names only the new
// variable (${env} is the first one).

// warnDeprecatedEnvs writes a warning for every deprecated variable that
// set a flag of the selected command.
func warnDeprecatedEnvs(kctx *kong.Context, w io.Writer) {
	sel := kctx.Selected()
	if sel == nil {
		return
	}
	for _, f := range sel.Flags {
		if len(f.Envs) < 2 {
			continue
		}
		if _, ok := os.LookupEnv(f.Envs[0]); ok {
			continue
		}
		for _, old := range f.Envs[1:] {
			if _, ok := os.LookupEnv(old); ok {
				fmt.Fprintf(w, "tpcd: warning: %s is deprecated and will stop working in a later release; it set --%s of %s, whose variable is now %s\n",
					old, f.Name, sel.Path(), f.Envs[0])
				break
			}
		}
	}
}
